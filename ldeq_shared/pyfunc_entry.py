"""MLflow models-from-code entry point of the ldeq pyfunc: logged as the model's ``python_model`` script, so the
MLflow Model holds no pickled Python object (loading it imports :mod:`ldeq_shared.mlflow_model` from the installed
``ldeq`` package)."""

from mlflow.models import set_model

from ldeq_shared.mlflow_model import LandmarkPyfunc

set_model(LandmarkPyfunc())
