"""The ML latency-prediction service: its own Django settings, URLconf and process
(`manage.py mlservice`), the v1 JSON contract, models persisted in the app's database and
training jobs run by a separate runner process.

Importing the app (models, migrations, commands) loads no ML library: the web app has it in
INSTALLED_APPS for its tables only. The service's workers load numpy (mlservice.serving) and
the model's libraries with the model; its runner loads scikit-learn when it trains.
"""
