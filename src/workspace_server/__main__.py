from workspace_server.cli import main

main()
