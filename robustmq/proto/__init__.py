"""gRPC contracts (``.proto``) and the modules ``grpc_tools.protoc`` generated from them.

The generated ``*_pb2.py`` / ``*_pb2_grpc.py`` are checked in so that building the package
needs no grpcio-tools; the command that regenerates them heads each ``.proto`` file. Code
that uses them lives in ``robustmq/meta``.
"""
