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

// orNewerSchema returns newerSchemaHint if err is a store's or a device
// database's ErrNewerSchema, else hint.
func orNewerSchema(err error, hint string) string {
	if errors.Is(err, sqlitestore.ErrNewerSchema) || errors.Is(err, pgstore.ErrNewerSchema) || errors.Is(err, mailstore.ErrNewerSchema) {
		return newerSchemaHint
	}
	return hint
}
