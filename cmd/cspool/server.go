package main

func runServer(e *env, args []string) error {
	fs := newFlagSet(e, "server", "", "Run the spool server.", "cspool server")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	return usagef("not built yet")
}
