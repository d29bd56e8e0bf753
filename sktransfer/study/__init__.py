"""The comparison study: tasks, the layer probe, compare and its report."""
