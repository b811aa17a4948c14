"""Generated from protos/ by tools/protogen.py."""
