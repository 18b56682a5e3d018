"""The model services: one generic gRPC server speaking the Open Inference Protocol.

`crimes serve dtc|lda` runs it for one registered model; see `settings` for what differs
between deployments, `runtime` for how the served version follows its MLflow alias, and
`crimes.protocol` for the protocol's tensors and parameters (shared with the clients).
"""
