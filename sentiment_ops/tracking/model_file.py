"""The model file MLflow logs with every version (MLflow 3 "models from code").

MLflow runs this file to build the model, at logging and wherever the model is loaded;
``sentiment_ops`` is importable there because it travels with the model as ``code_paths``
(``pyfunc.log_model``). Keep it to what predicting needs: no CLI, server or store imports.
"""

from mlflow.models import set_model

from sentiment_ops.tracking.pyfunc import SentimentPyfunc

set_model(SentimentPyfunc())
