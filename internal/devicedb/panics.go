package devicedb

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"reflect"
	"runtime/debug"
	"sync/atomic"

	"github.com/ncruces/go-sqlite3"
	sqlitedriver "github.com/ncruces/go-sqlite3/driver"
	"github.com/ncruces/go-sqlite3/util/vfsutil"
	"github.com/ncruces/go-sqlite3/vfs"
)

// The driver's panics.
//
// The driver panics where SQLite reports that it ran out of memory
// (SQLITE_NOMEM: a connection's SQLite has 256 MB, the Wasm memory it is
// compiled to, and less under a heap limit), where it could return an
// error. database/sql does not expect a driver to panic: a statement that
// panics inside a transaction never gives back the transaction's hold on
// its connection, so the Rollback that a deferred call makes while the
// panic unwinds waits for ever, and, the writers having one connection,
// so does every write after it. The panic is never seen.
//
// So database/sql reaches the driver only through the wrappers below, which
// turn a panic into an error (sqlite3.NOMEM for running out of memory) and
// mark the connection broken. A broken connection runs nothing more but
// Rollback and Close: any other statement of the transaction fails, so
// nothing is written once a statement has failed that way (SQLite may have
// rolled the transaction back already, and a write after that would commit
// on its own). database/sql closes a broken connection when it is given
// back (IsValid), which frees its SQLite's memory; the next statement opens
// a new one. A connection whose WAL buffer failed to be written out
// (walbuf.go) is closed the same way. Every method of the driver's connections, statements and rows
// that database/sql calls is forwarded (as of Go 1.26: a later Go's new
// optional interfaces are not, and database/sql then uses its general path).

// connector wraps the driver's connector; init runs on every new
// connection.
type connector struct {
	driver.Connector
	init func(*sqlite3.Conn) error
}

// open is the driver's Open, with the wrappers.
func open(dsn string, init func(*sqlite3.Conn) error) (*sql.DB, error) {
	c, err := (&sqlitedriver.SQLite{}).OpenConnector(dsn)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(&connector{Connector: c, init: init}), nil
}

func (n *connector) Connect(ctx context.Context) (_ driver.Conn, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = panicError(r)
		}
	}()
	dc, err := n.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	c, ok := dc.(sqlitedriver.Conn)
	if !ok {
		dc.Close()
		return nil, fmt.Errorf("the driver's connection %T gives no SQLite connection", dc)
	}
	if n.init != nil {
		if err := n.init(c.Raw()); err != nil {
			c.Close()
			return nil, err
		}
	}
	cn := &conn{c: c}
	if f, err := c.Raw().FileControl("main", sqlite3.FCNTL_FILE_POINTER); err == nil {
		if vf, ok := f.(vfs.File); ok {
			cn.db, _ = vfsutil.UnwrapFile[*mainFile](vf)
		}
	}
	return cn, nil
}

// OutOfMemory reports whether r, a recovered panic, is the driver's for
// SQLite out of memory (its message is sqlite3.NOMEM's; the value is of an
// internal type of the driver).
func OutOfMemory(r any) bool {
	e, ok := r.(error)
	return ok && e.Error() == sqlite3.NOMEM.Error()
}

// panicError is the error for a panic of the driver: sqlite3.NOMEM for
// its out of memory, else the panic's value and where it happened.
func panicError(r any) error {
	if OutOfMemory(r) {
		return sqlite3.NOMEM
	}
	return fmt.Errorf("sqlite3: the driver panicked: %v\n%s", r, debug.Stack())
}

// brokenError is what a broken connection answers.
type brokenError struct{ cause error }

func (e *brokenError) Error() string {
	return "the database connection failed before in this transaction: " + e.cause.Error()
}

// Unwrap gives the first failure and driver.ErrBadConn (outside a
// transaction database/sql tries another connection).
func (e *brokenError) Unwrap() []error { return []error{e.cause, driver.ErrBadConn} }

// conn is a driver connection whose calls cannot panic.
type conn struct {
	c      sqlitedriver.Conn
	broken atomic.Pointer[error]
	// db is the database's file when it is opened through the WAL
	// buffer (walbuf.go), else nil.
	db *mainFile
}

// caught turns a panic of the call it is deferred in into *err and marks
// the connection broken.
func (c *conn) caught(err *error) {
	r := recover()
	if r == nil {
		return
	}
	e := panicError(r)
	c.broken.CompareAndSwap(nil, &e)
	*err = e
}

// usable fails once the connection is broken.
func (c *conn) usable() error {
	if e := c.broken.Load(); e != nil {
		return &brokenError{*e}
	}
	return nil
}

// Raw gives the SQLite connection, as the driver's connection does.
func (c *conn) Raw() *sqlite3.Conn { return c.c.Raw() }

// IsValid is false once the connection is broken, or once a write-out of
// its WAL buffer failed (walFile.err, which fails every later use of the
// WAL): database/sql then closes it instead of keeping it, and the next
// statement opens a new one.
func (c *conn) IsValid() bool {
	return c.broken.Load() == nil && (c.db == nil || !c.db.walFailed())
}

func (c *conn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

func (c *conn) PrepareContext(ctx context.Context, query string) (_ driver.Stmt, err error) {
	if err := c.usable(); err != nil {
		return nil, err
	}
	defer c.caught(&err)
	s, err := c.c.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	return &stmt{s: s, c: c}, nil
}

func (c *conn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

func (c *conn) BeginTx(ctx context.Context, opts driver.TxOptions) (_ driver.Tx, err error) {
	if err := c.usable(); err != nil {
		return nil, err
	}
	defer c.caught(&err)
	t, err := c.c.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &tx{t: t, c: c}, nil
}

func (c *conn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (_ driver.Result, err error) {
	if err := c.usable(); err != nil {
		return nil, err
	}
	e, ok := c.c.(driver.ExecerContext)
	if !ok {
		return nil, driver.ErrSkip
	}
	defer c.caught(&err)
	return e.ExecContext(ctx, query, args)
}

func (c *conn) CheckNamedValue(v *driver.NamedValue) error {
	if ch, ok := c.c.(driver.NamedValueChecker); ok {
		return ch.CheckNamedValue(v)
	}
	return driver.ErrSkip
}

func (c *conn) Close() (err error) {
	defer c.caught(&err)
	return c.c.Close()
}

// tx is a transaction; Rollback runs on a broken connection too.
type tx struct {
	t driver.Tx
	c *conn
}

func (t *tx) Commit() (err error) {
	if err := t.c.usable(); err != nil {
		return err
	}
	defer t.c.caught(&err)
	return t.t.Commit()
}

func (t *tx) Rollback() (err error) {
	defer t.c.caught(&err)
	return t.t.Rollback()
}

// stmt is a prepared statement; Close runs on a broken connection too.
type stmt struct {
	s driver.Stmt
	c *conn
}

func (s *stmt) Close() (err error) {
	defer s.c.caught(&err)
	return s.s.Close()
}

func (s *stmt) NumInput() int { return s.s.NumInput() }

func (s *stmt) Exec(args []driver.Value) (driver.Result, error) {
	return s.ExecContext(context.Background(), named(args))
}

func (s *stmt) Query(args []driver.Value) (driver.Rows, error) {
	return s.QueryContext(context.Background(), named(args))
}

func named(args []driver.Value) []driver.NamedValue {
	n := make([]driver.NamedValue, len(args))
	for i, a := range args {
		n[i] = driver.NamedValue{Ordinal: i + 1, Value: a}
	}
	return n
}

func (s *stmt) ExecContext(ctx context.Context, args []driver.NamedValue) (_ driver.Result, err error) {
	if err := s.c.usable(); err != nil {
		return nil, err
	}
	defer s.c.caught(&err)
	return s.s.(driver.StmtExecContext).ExecContext(ctx, args)
}

func (s *stmt) QueryContext(ctx context.Context, args []driver.NamedValue) (_ driver.Rows, err error) {
	if err := s.c.usable(); err != nil {
		return nil, err
	}
	defer s.c.caught(&err)
	r, err := s.s.(driver.StmtQueryContext).QueryContext(ctx, args)
	if err != nil {
		return nil, err
	}
	return &rows{r: r, c: s.c}, nil
}

func (s *stmt) CheckNamedValue(v *driver.NamedValue) error {
	if ch, ok := s.s.(driver.NamedValueChecker); ok {
		return ch.CheckNamedValue(v)
	}
	return driver.ErrSkip
}

// rows are a query's rows; Close runs on a broken connection too.
type rows struct {
	r driver.Rows
	c *conn
}

func (r *rows) Columns() []string { return r.r.Columns() }

func (r *rows) Close() (err error) {
	defer r.c.caught(&err)
	return r.r.Close()
}

func (r *rows) Next(dest []driver.Value) (err error) {
	if err := r.c.usable(); err != nil {
		return err
	}
	defer r.c.caught(&err)
	return r.r.Next(dest)
}

func (r *rows) ColumnTypeDatabaseTypeName(i int) string {
	if t, ok := r.r.(driver.RowsColumnTypeDatabaseTypeName); ok {
		return t.ColumnTypeDatabaseTypeName(i)
	}
	return ""
}

func (r *rows) ColumnTypeNullable(i int) (nullable, ok bool) {
	if t, ok := r.r.(driver.RowsColumnTypeNullable); ok {
		return t.ColumnTypeNullable(i)
	}
	return false, false
}

func (r *rows) ColumnTypeScanType(i int) reflect.Type {
	if t, ok := r.r.(driver.RowsColumnTypeScanType); ok {
		return t.ColumnTypeScanType(i)
	}
	return reflect.TypeFor[any]()
}
