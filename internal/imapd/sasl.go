package imapd

import (
	"bytes"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-sasl"
)

var _ imapserver.SessionSASL = (*session)(nil)

// AuthenticateMechanisms implements imapserver.SessionSASL: PLAIN only,
// as go-imap offers without it.
func (s *session) AuthenticateMechanisms() []string { return []string{sasl.Plain} }

// Authenticate implements imapserver.SessionSASL with plainServer, in
// place of go-sasl's PLAIN server, whose error for a malformed message
// go-imap answered with "NO [SERVERBUG] Internal server error".
func (s *session) Authenticate(mech string) (sasl.Server, error) {
	if mech != sasl.Plain {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Text: "SASL mechanism not supported"}
	}
	return &plainServer{login: s.Login}, nil
}

// errPlainMalformed answers a PLAIN message that is not [authzid] NUL
// authcid NUL passwd (RFC 4616 section 2): the client's error, so BAD
// (RFC 9051 section 6.2.2). No password was compared: no failure is
// counted.
var errPlainMalformed = &imap.Error{Type: imap.StatusResponseTypeBad, Code: imap.ResponseCodeClientBug,
	Text: "the PLAIN response is not authzid NUL authcid NUL passwd in base64 (RFC 4616 section 2)"}

// plainServer is the server side of PLAIN (RFC 4616): one message, the
// initial response or the answer to an empty challenge.
type plainServer struct {
	login func(user, pass string) error
	done  bool
}

func (p *plainServer) Next(response []byte) (challenge []byte, done bool, err error) {
	if p.done {
		return nil, false, sasl.ErrUnexpectedClientResponse
	}
	if response == nil {
		// No initial response: an empty challenge asks for it.
		return []byte{}, false, nil
	}
	p.done = true
	parts := bytes.Split(response, []byte{0})
	if len(parts) != 3 {
		return nil, false, errPlainMalformed
	}
	identity, user, pass := string(parts[0]), string(parts[1]), string(parts[2])
	if identity != "" && identity != user {
		return nil, false, &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAuthorizationFailed,
			Text: "SASL identity not supported"}
	}
	return nil, true, p.login(user, pass)
}
