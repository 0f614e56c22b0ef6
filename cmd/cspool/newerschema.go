package main

import (
	"errors"

	"cspool/internal/mailstore"
	"cspool/internal/spool/pgstore"
	"cspool/internal/spool/sqlitestore"
)

// newerSchemaHint says what to do about a store or device database whose
// schema a newer cspool migrated.
const newerSchemaHint = "a newer release of cspool has migrated it, and this one cannot use it: run that release or a later one (nothing is lost); going back to this release means restoring the copy made before the upgrade (docs/OPERATING.md, \"Upgrading\")"

// missingTriggersHint says what to do about a PostgreSQL store whose
// schema lacks triggers (pgstore.ErrMissingTriggers).
const missingTriggersHint = "the database was restored in part, or these triggers were disabled: restore the backup again into a new database (docs/OPERATING.md, \"Restoring a backup\"), or enable them (ALTER TABLE ... ENABLE TRIGGER ...)"

// orNewerSchema returns newerSchemaHint if err is a store's or a device
// database's ErrNewerSchema, missingTriggersHint if it is the PostgreSQL
// store's ErrMissingTriggers, else hint.
func orNewerSchema(err error, hint string) string {
	if errors.Is(err, sqlitestore.ErrNewerSchema) || errors.Is(err, pgstore.ErrNewerSchema) || errors.Is(err, mailstore.ErrNewerSchema) {
		return newerSchemaHint
	}
	if errors.Is(err, pgstore.ErrMissingTriggers) {
		return missingTriggersHint
	}
	return hint
}
