"""The Open Inference Protocol (KServe V2) as the project speaks it, shared by the model
services and their clients (the gateway, the tests, the benchmarks)."""
