"""Generated gRPC stubs: see protos/README.md."""
