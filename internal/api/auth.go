package api

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cspool/internal/keys"
)

// AuthScheme is the Authorization scheme; its digit is the version.
const AuthScheme = "CSPOOL-SIG-1"

// sigContext starts every signed message, so a signature made for the API
// can never be taken for one made for anything else.
const sigContext = "cspool-api-sig-1"

const (
	nonceSize = 16
	sigSize   = ed25519.SignatureSize
)

// authorization is a parsed Authorization header.
type authorization struct {
	key      keys.PublicKey
	keyText  string  // key.String(): the header's text, which is canonical
	keyID    [8]byte // key.KeyID()
	ts       int64
	nonce    [nonceSize]byte
	bodyHash [sha256.Size]byte
	sig      []byte
}

// String returns the canonical header value.
func (a *authorization) String() string {
	return fmt.Sprintf("%s key=%s, ts=%d, nonce=%s, body=%s, sig=%s", AuthScheme,
		a.key, a.ts, hex.EncodeToString(a.nonce[:]), hex.EncodeToString(a.bodyHash[:]),
		base64.RawURLEncoding.EncodeToString(a.sig))
}

var errAuthSyntax = errors.New("malformed Authorization header")

// parseAuthorization parses the canonical header value: exactly the form
// String produces, so each authorization has one encoding.
func parseAuthorization(s string) (*authorization, error) { return parseAuthorizationKnown(s, nil) }

// parseAuthorizationKnown is parseAuthorization, taking the key from known
// if its text is there (parsed before, the same text gives the same key).
func parseAuthorizationKnown(s string, known *knownKeys) (*authorization, error) {
	rest, ok := strings.CutPrefix(s, AuthScheme+" ")
	if !ok {
		return nil, fmt.Errorf("%w: want scheme %s", errAuthSyntax, AuthScheme)
	}
	names := [...]string{"key", "ts", "nonce", "body", "sig"}
	var vals [len(names)]string
	for i := range vals {
		v, next, found := strings.Cut(rest, ", ")
		if found != (i < len(vals)-1) {
			return nil, fmt.Errorf("%w: want %d parameters", errAuthSyntax, len(names))
		}
		val, ok := strings.CutPrefix(v, names[i]+"=")
		if !ok {
			return nil, fmt.Errorf("%w: parameter %d is not %s", errAuthSyntax, i+1, names[i])
		}
		vals[i], rest = val, next
	}
	a := &authorization{keyText: vals[0]}
	var err error
	if k := known.get(vals[0]); k != nil {
		a.key, a.keyID = k.key, k.id
	} else {
		// ParsePublic refuses a non-canonical key but trims blanks first.
		if a.key, err = keys.ParsePublic(vals[0]); err != nil || strings.TrimSpace(vals[0]) != vals[0] {
			return nil, fmt.Errorf("%w: key: %v", errAuthSyntax, err)
		}
		a.keyID = a.key.KeyID()
	}
	a.ts, err = strconv.ParseInt(vals[1], 10, 64)
	if err != nil || a.ts < 0 || strconv.FormatInt(a.ts, 10) != vals[1] {
		return nil, fmt.Errorf("%w: ts", errAuthSyntax)
	}
	if err := decodeHex(a.nonce[:], vals[2]); err != nil {
		return nil, fmt.Errorf("%w: nonce", errAuthSyntax)
	}
	if err := decodeHex(a.bodyHash[:], vals[3]); err != nil {
		return nil, fmt.Errorf("%w: body", errAuthSyntax)
	}
	a.sig, err = base64.RawURLEncoding.Strict().DecodeString(vals[4])
	if err != nil || len(a.sig) != sigSize {
		return nil, fmt.Errorf("%w: sig", errAuthSyntax)
	}
	return a, nil
}

// decodeHex decodes exactly len(dst) bytes of lowercase hex.
func decodeHex(dst []byte, s string) error {
	if len(s) != 2*len(dst) || strings.ToLower(s) != s {
		return errAuthSyntax
	}
	_, err := hex.Decode(dst, []byte(s))
	return err
}

// canonicalQuery is the signed form of a query: parameters sorted by name,
// form-encoded as url.Values.Encode does. A name given twice is refused.
func canonicalQuery(raw string) (string, error) {
	q, err := url.ParseQuery(raw)
	if err != nil {
		return "", fmt.Errorf("query: %w", err)
	}
	for k, v := range q {
		if len(v) > 1 {
			return "", fmt.Errorf("query parameter %q given %d times", clip(k), len(v))
		}
	}
	return q.Encode(), nil
}

// signedMessage is what the signature covers; see docs/API.md.
func signedMessage(method, path, query string, a *authorization) []byte {
	var b strings.Builder
	for _, f := range []string{sigContext, method, path, query,
		hex.EncodeToString(a.bodyHash[:]), strconv.FormatInt(a.ts, 10),
		hex.EncodeToString(a.nonce[:]), a.keyText} {
		b.WriteString(f)
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// SignRequest sets req's Authorization header: a signature by key over the
// method, req.URL.Path, the canonical form of req.URL.RawQuery (which it
// rewrites to that form), SHA-256 of body (the exact bytes req will send),
// the time now and a fresh random nonce.
func SignRequest(req *http.Request, body []byte, key *keys.SecretKey, now time.Time) error {
	_, err := signRequestHash(req, sha256.Sum256(body), key, now)
	return err
}

// signRequestHash is SignRequest given the SHA-256 of the body: a body
// streamed from a file is hashed first. It returns the request's nonce in
// hex, as the server echoes it (HeaderNonce).
func signRequestHash(req *http.Request, bodyHash [sha256.Size]byte, key *keys.SecretKey, now time.Time) (string, error) {
	q, err := canonicalQuery(req.URL.RawQuery)
	if err != nil {
		return "", err
	}
	req.URL.RawQuery = q
	a := &authorization{key: key.Public(), keyText: key.Public().String(), ts: now.Unix(), bodyHash: bodyHash}
	if _, err := rand.Read(a.nonce[:]); err != nil {
		return "", fmt.Errorf("signing request: %w", err)
	}
	a.sig = key.Sign(signedMessage(req.Method, req.URL.Path, q, a))
	req.Header.Set("Authorization", a.String())
	return hex.EncodeToString(a.nonce[:]), nil
}

// knownKeys are the keys of requests that passed authentication, parsed,
// by their text form, so that a device's next request does not decode and
// checksum its key again. It holds no decision: every request is still
// verified and authorized. At most maxKnownKeys are kept; beyond, keys are
// parsed every time.
type knownKeys struct {
	m sync.Map // text -> *knownKey
	n atomic.Int64
}

type knownKey struct {
	key keys.PublicKey
	id  [8]byte
}

const maxKnownKeys = 1 << 16

// get returns the key whose text form is text, or nil; k may be nil.
func (k *knownKeys) get(text string) *knownKey {
	if k == nil {
		return nil
	}
	if v, ok := k.m.Load(text); ok {
		return v.(*knownKey)
	}
	return nil
}

// add remembers a's key, if there is room.
func (k *knownKeys) add(a *authorization) {
	if k.get(a.keyText) != nil || k.n.Load() >= maxKnownKeys {
		return
	}
	if _, loaded := k.m.LoadOrStore(a.keyText, &knownKey{key: a.key, id: a.keyID}); !loaded {
		k.n.Add(1)
	}
}
