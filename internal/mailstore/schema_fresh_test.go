package mailstore

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"cspool/internal/devicedb"
	"cspool/internal/mimeform"
)

var updateSchema = flag.Bool("update-schema", false, "rewrite schema_fresh.sql from a database migrated step by step")

// TestFreshSchemaAsMigrated opens a new database, which freshSchema makes
// at once, and one that migrate takes from version 0 step by step, and
// requires the same schema objects (type, name, table and SQL text) and
// the same rows in every table, the search index's own tables included,
// and the same version and application id. With -update-schema it first
// writes schema_fresh.sql from the one migrated step by step.
func TestFreshSchemaAsMigrated(t *testing.T) {
	if *updateSchema {
		script, err := schemaScript(t)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("schema_fresh.sql", []byte(script), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Fatalf("wrote schema_fresh.sql: set freshSchemaVersion to %d, build again and run the test without -update-schema", SchemaVersion)
	}
	if freshSchemaVersion != SchemaVersion {
		t.Fatalf("freshSchema makes version %d, the migrations reach %d: rewrite it (go test ./internal/mailstore -run TestFreshSchemaAsMigrated -update-schema)", freshSchemaVersion, SchemaVersion)
	}
	for _, key := range []*devicedb.Key{nil, {3}} {
		fresh := openSchema(t, false, key)
		stepwise := openSchema(t, true, key)
		a, b := schemaObjects(t, fresh), schemaObjects(t, stepwise)
		if !reflect.DeepEqual(a, b) {
			for i := range max(len(a), len(b)) {
				var x, y string
				if i < len(a) {
					x = a[i]
				}
				if i < len(b) {
					y = b[i]
				}
				if x != y {
					t.Errorf("schema object %d:\nfresh    %s\nmigrated %s", i, x, y)
				}
			}
			t.Fatalf("fresh schema (%d objects) is not the migrated one (%d objects): rewrite it with -update-schema", len(a), len(b))
		}
		for _, o := range a {
			typ, name, _ := strings.Cut(o, " ")
			name, _, _ = strings.Cut(name, " ")
			if typ != "table" || strings.Contains(o, "CREATE VIRTUAL TABLE") {
				continue
			}
			q := "SELECT * FROM " + quoteName(name)
			if x, y := tableRows(t, fresh, q), tableRows(t, stepwise, q); !reflect.DeepEqual(x, y) {
				t.Errorf("table %s: fresh %v, migrated %v", name, x, y)
			}
		}
		for _, p := range []string{"user_version", "application_id"} {
			var x, y int64
			if err := fresh.rdb.QueryRow("PRAGMA " + p).Scan(&x); err != nil {
				t.Fatal(err)
			}
			if err := stepwise.rdb.QueryRow("PRAGMA " + p).Scan(&y); err != nil {
				t.Fatal(err)
			}
			if x != y {
				t.Errorf("PRAGMA %s: fresh %d, migrated %d", p, x, y)
			}
		}
	}
}

func quoteName(n string) string { return `"` + strings.ReplaceAll(n, `"`, `""`) + `"` }

// openSchema opens a new store, made step by step or at once.
func openSchema(t *testing.T, stepwise bool, key *devicedb.Key) *Store {
	t.Helper()
	migrateStepwise = stepwise
	defer func() { migrateStepwise = false }()
	s, err := OpenWith(filepath.Join(t.TempDir(), "mail.db"), Options{Parser: mimeform.Parser{}, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// schemaObjects lists the schema's objects, "type name table sql", by name.
func schemaObjects(t *testing.T, s *Store) []string {
	t.Helper()
	rows, err := s.rdb.Query("SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_schema ORDER BY name")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var typ, name, tbl, sqlText string
		if err := rows.Scan(&typ, &name, &tbl, &sqlText); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s %s %s %s", typ, name, tbl, sqlText))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// schemaScript returns the SQL that makes a database migrated step by
// step from version 0: its schema objects in the order they were made
// (the search index's own tables, which its CREATE VIRTUAL TABLE makes,
// left out), then its rows, table by table, the search index's settings
// as the commands that set them.
func schemaScript(t *testing.T) (string, error) {
	s := openSchema(t, true, nil)
	ctx := context.Background()
	db := s.rdb
	var virtual []string
	rows, err := db.QueryContext(ctx, "SELECT name FROM sqlite_schema WHERE sql LIKE 'CREATE VIRTUAL TABLE%'")
	if err != nil {
		return "", err
	}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return "", err
		}
		virtual = append(virtual, n)
	}
	rows.Close()
	shadow := func(name string) bool {
		for _, v := range virtual {
			if strings.HasPrefix(name, v+"_") {
				return true
			}
		}
		return false
	}
	var b strings.Builder
	b.WriteString("-- Written by TestFreshSchemaAsMigrated -update-schema (schema_fresh_test.go)\n")
	b.WriteString(fmt.Sprintf("-- from a database migrated from version 0 to %d; do not edit.\n", SchemaVersion))
	rows, err = db.QueryContext(ctx, "SELECT type, name, sql FROM sqlite_schema WHERE sql IS NOT NULL ORDER BY rowid")
	if err != nil {
		return "", err
	}
	var tables []string
	for rows.Next() {
		var typ, name, text string
		if err := rows.Scan(&typ, &name, &text); err != nil {
			return "", err
		}
		if shadow(name) {
			continue
		}
		if typ == "table" && !strings.HasPrefix(text, "CREATE VIRTUAL TABLE") {
			tables = append(tables, name)
		}
		b.WriteString(text + ";\n")
	}
	rows.Close()
	for _, tbl := range tables {
		if err := insertRows(ctx, db, &b, tbl); err != nil {
			return "", err
		}
	}
	for _, v := range virtual {
		var cfg *sql.Rows
		cfg, err := db.QueryContext(ctx, "SELECT k, v FROM "+quoteName(v+"_config")+" WHERE k != 'version' ORDER BY k")
		if err != nil {
			continue // not an FTS5 table
		}
		for cfg.Next() {
			var k string
			var val int64
			if err := cfg.Scan(&k, &val); err != nil {
				cfg.Close()
				return "", err
			}
			fmt.Fprintf(&b, "INSERT INTO %s (%s, rank) VALUES ('%s', %d);\n", v, v, k, val)
		}
		cfg.Close()
	}
	return b.String(), nil
}

// insertRows writes an INSERT of table's rows, if it has any.
func insertRows(ctx context.Context, db *sql.DB, b *strings.Builder, table string) error {
	var cols []string
	rows, err := db.QueryContext(ctx, "SELECT name FROM pragma_table_info(?)", table)
	if err != nil {
		return err
	}
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			rows.Close()
			return err
		}
		cols = append(cols, c)
	}
	rows.Close()
	quoted := make([]string, len(cols))
	for i, c := range cols {
		quoted[i] = "quote(" + quoteName(c) + ")"
	}
	q := "SELECT " + strings.Join(quoted, " || ', ' || ") + " FROM " + quoteName(table)
	rows, err = db.QueryContext(ctx, q+" ORDER BY rowid")
	if err != nil {
		rows, err = db.QueryContext(ctx, q) // WITHOUT ROWID: in key order
	}
	if err != nil {
		return err
	}
	defer rows.Close()
	var vals []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			return err
		}
		vals = append(vals, "("+v+")")
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(vals) > 0 {
		fmt.Fprintf(b, "INSERT INTO %s (%s) VALUES\n\t%s;\n", table, strings.Join(cols, ", "), strings.Join(vals, ",\n\t"))
	}
	return nil
}
