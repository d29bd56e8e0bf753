"""The network of a fine-tuning estimator: how it is built, run and stored.

:class:`FineTunedNetwork` builds the network (backbone blocks and a new linear head)
and its skorch wrapper, runs the fitted network (``transform``, the head's outputs)
reading it only, through the prepared :class:`~sktransfer._engine.inference.Inference`,
so that threads can share a fitted estimator, and pickles and saves it.
:class:`~sktransfer._finetuning.base.FineTuneBase` adds the fitting.
"""

import torch
from sklearn.utils.validation import check_is_fitted

from sktransfer._engine.backbones import resolve_backbone, weights_digest
from sktransfer._engine.estimator import NetworkEstimator
from sktransfer._engine.images import check_images
from sktransfer._engine.inference import (
    TTAViews,
    block_output_shapes,
    inference_batch_size,
    pooled_width,
    stream_features,
)
from sktransfer._engine.preprocessing import Preprocessing
from sktransfer._training.skorch_net import training_net
from sktransfer._training.transfer_net import TransferNet, block_learning_rates, resolve_freeze
from sktransfer._training.trunk import FrozenTrunk

#: Training epochs when ``max_epochs=None`` asks for training.
DEFAULT_EPOCHS = 20


class FineTunedNetwork(NetworkEstimator):
    """The network of a fine-tuning estimator; not for direct use.

    Subclasses implement ``_n_outputs()``, ``_criterion(y_train, sample_weight)``,
    ``_target_state()`` and ``_set_target_state(description)``.
    """

    # -- the network ---------------------------------------------------------------

    def _build_network(self, backbone, batchnorm):
        """A new ``TransferNet`` of ``backbone``'s blocks, BatchNorm in mode ``batchnorm``."""
        self.preprocessing_ = backbone.preprocessing.with_size(self.image_size)
        self.n_blocks_ = len(backbone.block_names)
        self.block_names_ = backbone.block_names
        self.n_frozen_ = resolve_freeze(self.freeze, self.n_blocks_,
                                        backbone.block_names)
        self.head_init_ = self.head_init
        if self.head_init == "auto":
            self.head_init_ = "probe" if self.n_frozen_ == self.n_blocks_ else "random"
        self.batchnorm_ = batchnorm
        self._block_shapes = block_output_shapes(backbone.blocks, self.preprocessing_)
        width = pooled_width(self._block_shapes[-1])
        self._model = TransferNet(backbone.blocks, width, self._n_outputs(), self.n_frozen_,
                                  batchnorm=self.batchnorm_)
        self._model.to(memory_format=torch.channels_last)
        self._feature_names_out = [f"{self.block_names_[-1]}_avg{i}" for i in range(width)]

    def _skorch_net(self, y_train, device, sample_weight=None, *, lr):
        loss, class_weight = self._criterion(y_train, sample_weight)
        return training_net(
            self._model, loss=loss, class_weight=class_weight, lr=lr,
            block_rates=block_learning_rates(self.n_blocks_, self.n_frozen_, lr,
                                             self.layer_lr_decay),
            optimizer=self.optimizer, weight_decay=self.weight_decay,
            max_epochs=DEFAULT_EPOCHS if self.max_epochs is None else self.max_epochs,
            batch_size=self.batch_size,
            n_train=0 if y_train is None else len(y_train),
            early_stopping=self.early_stopping_, patience=self.patience,
            checkpoint=self.checkpoint, validation=self.early_stopping_,
            verbose=self.verbose, device=device)

    def _forget_training_data(self):
        """Drop what only training needed, so the fitted model pickles small."""
        self.net_.forget_training_data()
        self.__dict__.pop("_model", None)

    # -- inference -------------------------------------------------------------------

    def transform(self, X):
        """Compute the penultimate features of the fine-tuned network (its pooled last block).

        Parameters
        ----------
        X : images
            Any accepted image input.

        Returns
        -------
        ndarray of shape (n_samples, n_features), float32
            What the head reads, for any other scikit-learn estimator.
        """
        check_is_fitted(self)
        inference = self._inference_for_call()

        def extract(images):
            if self.memory is not None and self.n_frozen_ > 0:
                trunk = self._frozen_trunk(inference, self._fitted_blocks())
                inputs = trunk.inputs(images, self.n_frozen_)  # from the fit's cache
                if inputs is not None:
                    return trunk.top_features(inputs, self.n_frozen_)
            return self._penultimate(inference, images)

        def computation():
            return ("penultimate", weights_digest(self._fitted_blocks()), self.preprocessing_,
                    inference.precision)

        return self._transform_images(X, extract, computation)

    def _head_outputs(self, X):
        """The head's raw outputs (logits) for ``X``, as a float64 tensor.

        With ``tta``, the mean over the views; the head is linear, so that is the head
        of the views' mean penultimate features.
        """
        check_is_fitted(self)
        if self.tta is None:
            return self._apply_head(self.transform(X))
        views = TTAViews(self.tta)  # checks tta: set_params may have changed it after fit
        images = check_images(self, X, reset=False, image_shape=self.image_shape)
        return self._apply_head(self._penultimate(self._inference_for_call(), images, views))

    def _penultimate(self, inference, images, views=None):
        """Pooled features of the top block (with ``views``: their mean per image)."""
        batch_size = ("auto" if views is None
                      else max(1, self._inference_batch_size() // len(views)))
        return stream_features(
            inference, images, layers=[self.n_blocks_ - 1], pooling="avg",
            preprocessing=self.preprocessing_, batch_size=batch_size,
            progress=self.progress, views=views)

    def _head_outputs_from_trunk(self, inputs, start):
        """The head's outputs for precomputed inputs of block ``start`` (a search's scoring)."""
        trunk = self._frozen_trunk(self._inference_for_call(), self._fitted_blocks())
        return self._apply_head(trunk.top_features(inputs, start))

    def _apply_head(self, features):
        head = self.net_.module_.head
        with torch.inference_mode():
            outputs = torch.nn.functional.linear(torch.as_tensor(features),
                                                 head.weight.detach().cpu().float(),
                                                 head.bias.detach().cpu().float())
        return outputs.double()

    def _frozen_trunk(self, inference, fitted_blocks):
        return FrozenTrunk(inference, fitted_blocks, block_shapes=self._block_shapes,
                           preprocessing=self.preprocessing_, memory=self.memory,
                           batch_size=self._inference_batch_size())

    def _inference_batch_size(self):
        """Frozen-block caching, transform and predict run at the fastest batch size."""
        return inference_batch_size("auto", self.preprocessing_.input_size)

    def _fitted_blocks(self):
        return self.net_.module_.blocks

    def __sklearn_is_fitted__(self):
        return hasattr(self, "net_")

    # -- pickles and safe files -------------------------------------------------------

    def __getstate__(self):
        """Pickle what prediction needs: the optimizer's state (twice the weights) stays out.

        skorch pickles ``module`` (its init parameter, the same network as ``module_``)
        apart from ``module_``, which would store the weights twice: it travels as None
        and is re-linked on unpickling. A warm-started fit of an unpickled model starts a
        fresh optimizer.
        """
        state = super().__getstate__()
        if "net_" in state:
            trained = state["net_"]
            net = object.__new__(type(trained))  # a shallow copy: the live net is not touched
            net.__dict__.update({k: v for k, v in vars(trained).items() if k != "optimizer_"})
            net.module = None
            state["net_"] = net
        return state

    def __setstate__(self, state):
        if "net_" in state:
            state["net_"].module = state["net_"].module_
        super().__setstate__(state)

    def _get_safe_state(self):
        """(JSON description, tensors) of the fitted state, for sktransfer.save."""
        description = {
            "preprocessing": self.preprocessing_.to_json(),
            "n_frozen_": self.n_frozen_, "best_epoch_": self.best_epoch_,
            "batchnorm_": self.batchnorm_, "head_init_": self.head_init_,
            "early_stopping_": self.early_stopping_,
            "lr_": self.lr_,
            "history": [{k: v for k, v in epoch.items() if k != "batches"}
                        for epoch in self.history_],
            **self._target_state(),
        }
        return description, self.net_.module_.state_dict()

    def _set_safe_state(self, description, tensors):
        """Rebuild the fitted state from what :meth:`_get_safe_state` gave (sktransfer.load)."""
        from skorch.history import History

        self._set_target_state(description)
        self._build_network(resolve_backbone(self.backbone, weights=None),
                            description["batchnorm_"])
        self.head_init_ = description["head_init_"]
        self.early_stopping_ = description["early_stopping_"]
        self.preprocessing_ = Preprocessing.from_json(description["preprocessing"])
        self._model.load_state_dict(tensors)
        self.lr_ = description["lr_"]
        net = self._skorch_net(None, torch.device("cpu"), lr=self.lr_)
        net.initialize()
        net.history = History(description["history"])
        self.net_, self.history_ = net, net.history
        self.best_epoch_ = description["best_epoch_"]
        self.interrupted_ = False
        self._forget_training_data()
        self._prepare_inference()
