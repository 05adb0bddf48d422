from cni_bridge.main import main
main()
