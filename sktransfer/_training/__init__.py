"""Training networks: the skorch side, the transfer network, the frozen trunk, the
learning-rate range test and the linear head."""
