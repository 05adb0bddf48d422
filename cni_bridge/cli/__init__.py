"""The `cni-bridge` command: a CNI runtime in one command (runtime.py: what libcni does;
command.py: the command line). Never imported by the plugins' exec path."""
