"""Training, evaluation and the model registry of churn-platform.

``labels`` / ``dataset`` build a point-in-time correct training set, ``fit`` trains the baseline
and LightGBM models, ``evaluate`` / ``report`` measure them, ``model`` is the servable
:class:`~training.model.ChurnModel` and ``registry`` stores and promotes versions.
"""
