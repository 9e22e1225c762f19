"""HTTP endpoints: parse the body, call the service/backend, shape the answer; nothing else."""
