"""Day-2 operations (rollouts, ...), each a module; the batch runner and the Kubernetes API
client are shared by all of them."""
