"""The logged model's class at the module path that earlier versions name: a cloudpickled
``SentimentPyfunc`` and the model file of versions logged before ``tracking.pyfunc`` held
it import ``sentiment_ops.pyfunc.SentimentPyfunc``. The model itself: ``tracking.pyfunc``."""

from sentiment_ops.tracking.pyfunc import SentimentPyfunc

__all__ = ["SentimentPyfunc"]
