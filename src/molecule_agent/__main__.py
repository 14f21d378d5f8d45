from molecule_agent.main import main

main()
