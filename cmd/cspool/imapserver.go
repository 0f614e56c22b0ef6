package main

func runIMAPServer(e *env, args []string) error {
	fs := newFlagSet(e, "imap-server", "", "Run the imap-server.", "cspool imap-server")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	return usagef("not built yet")
}
