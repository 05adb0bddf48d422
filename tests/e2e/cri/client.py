"""One CRI call from the command line, for tests/e2e/test_containerd.py.

The tests run in the project's venv, which cannot import Debian's grpc; this script runs under
Debian's python3 (packages python3-grpcio, python3-grpc-tools), with the Python modules that
`python3 -m grpc_tools.protoc` made from runtime_v1.proto.

usage: /usr/bin/python3 client.py GENERATED_DIR SOCKET METHOD REQUEST_JSON
Prints the reply as JSON (proto field names, defaults included). A gRPC error goes to stderr
as "CODE: details", with exit status 1.
"""

import json
import sys


def main() -> int:
    generated, socket_path, method, request_json = sys.argv[1:5]
    sys.path.insert(0, generated)
    import grpc
    from google.protobuf import json_format

    import runtime_v1_pb2 as api
    import runtime_v1_pb2_grpc as api_grpc

    service = next(s for s in api.DESCRIPTOR.services_by_name.values() if method in s.methods_by_name)
    request_class = getattr(api, service.methods_by_name[method].input_type.name)
    request = json_format.ParseDict(json.loads(request_json), request_class())
    with grpc.insecure_channel(f"unix://{socket_path}") as channel:
        call = getattr(getattr(api_grpc, f"{service.name}Stub")(channel), method)
        try:
            reply = call(request, timeout=120)
        except grpc.RpcError as err:
            sys.stderr.write(f"{err.code().name}: {err.details()}\n")
            return 1
    print(json.dumps(json_format.MessageToDict(reply, preserving_proto_field_name=True,
                                               including_default_value_fields=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
