package main

func runDeliver(e *env, args []string) error {
	fs := newFlagSet(e, "deliver", "", "Run the deliver.", "cspool deliver")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	return usagef("not built yet")
}
