"""The optimizer's pure domain: the proposal lifecycle and the OMS order identities.

Nothing here imports FastAPI, SQLAlchemy or aiokafka; every function takes explicit inputs.
"""
