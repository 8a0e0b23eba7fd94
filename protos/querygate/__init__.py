"""Querygate protocol buffers and their generated Python stubs."""
