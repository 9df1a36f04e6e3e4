from passerelle.connector.cli import main

main()
