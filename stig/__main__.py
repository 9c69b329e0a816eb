from stig.cli import main

main()
