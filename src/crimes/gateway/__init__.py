"""The REST gateway: validate, transform once, fan out to both model services, merge."""
