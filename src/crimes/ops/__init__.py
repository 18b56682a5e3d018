"""What every process of the system shares with its host: structured logs, allocator
settings, container health probes."""
