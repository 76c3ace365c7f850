"""The server layer: uvicorn under a Kubernetes-friendly shutdown, HTTP limits, run state."""
