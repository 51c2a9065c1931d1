"""The store's runs in other tools: MLflow (mlflow)."""
