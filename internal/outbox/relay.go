package outbox

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"cspool/internal/submit"
	"cspool/internal/termtext"
)

// Relay is the smarthost every message goes through.
type Relay struct {
	// Addr is host:port.
	Addr string
	// ImplicitTLS: TLS from the first byte (smtps, port 465); otherwise
	// STARTTLS is required (submission, port 587).
	ImplicitTLS bool
	// LMTP speaks plain LMTP without TLS; only for a listener on the same
	// machine (the quickstart relays to its own LMTP listener).
	LMTP bool
	// Username and Password log in (AUTH PLAIN) when Username is set.
	Username, Password string
	// RootCAs verify the smarthost's certificate; nil: the system's.
	RootCAs *x509.CertPool
	// Timeout bounds connecting, each command and each write of the
	// message. Zero means 2 minutes.
	Timeout time.Duration
	// DataTimeout bounds the wait for the reply to the final dot. Zero
	// means 10 minutes, RFC 5321 section 4.5.3.2.6's: a smarthost may
	// scan a message before it answers, and a client that gives up
	// sooner sends the message again, which the recipients get twice.
	DataTimeout time.Duration
}

// ParseRelayURL reads smtps://host[:465] or smtp://host[:587] (STARTTLS
// required).
func ParseRelayURL(s string) (Relay, error) {
	u, err := url.Parse(s)
	if err != nil {
		// url.Parse's error quotes the URL whole, a password in it too,
		// and its reason may quote a part of the password (taken for a
		// port): said only of a URL without userinfo.
		if hidden := termtext.WithoutUserinfo(s); hidden != s {
			return Relay{}, fmt.Errorf("%q is not a URL (smtps://host:465 or smtp://host:587; no name or password in it)", hidden)
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return Relay{}, fmt.Errorf("%q: %w", s, err)
	}
	if u.User != nil {
		return Relay{}, fmt.Errorf("%q: no name or password in the URL: give them as --relay-user and --relay-password-file (smtps://host:465 or smtp://host:587)", termtext.WithoutUserinfo(s))
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "" {
		return Relay{}, fmt.Errorf("%q: want only scheme, host and port (smtps://host:465 or smtp://host:587)", s)
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		return Relay{}, fmt.Errorf("%q has no host", s)
	}
	var r Relay
	switch u.Scheme {
	case "smtps":
		r.ImplicitTLS = true
		if port == "" {
			port = "465"
		}
	case "smtp":
		if port == "" {
			port = "587"
		}
	default:
		return Relay{}, fmt.Errorf("%q: the scheme must be smtps (TLS) or smtp (STARTTLS, required)", s)
	}
	r.Addr = net.JoinHostPort(host, port)
	return r, nil
}

// String is the relay as a URL, without credentials.
func (r Relay) String() string {
	switch {
	case r.LMTP:
		return "lmtp://" + r.Addr
	case r.ImplicitTLS:
		return "smtps://" + r.Addr
	}
	return "smtp://" + r.Addr
}

// stopGrace is how long a stop leaves the command in progress to finish
// (dial). Within systemd's default stop timeout (90 s), with room for the
// rest of the daemon's stop.
const stopGrace = 10 * time.Second

func (r Relay) timeout() time.Duration {
	if r.Timeout > 0 {
		return r.Timeout
	}
	return 2 * time.Minute
}

func (r Relay) dataTimeout() time.Duration {
	if r.DataTimeout > 0 {
		return r.DataTimeout
	}
	return 10 * time.Minute
}

// permanentError is a failure that trying again will not fix: a 5xx reply,
// a certificate that does not verify, a smarthost without STARTTLS.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

func isPermanent(err error) bool {
	var pe *permanentError
	if errors.As(err, &pe) {
		return true
	}
	var se *smtp.SMTPError
	return errors.As(err, &se) && se.Code >= 500
}

// connError classifies a failure to connect or log in.
func connError(what string, err error) error {
	var cve *tls.CertificateVerificationError
	var uae x509.UnknownAuthorityError
	var he x509.HostnameError
	var cie x509.CertificateInvalidError
	if errors.As(err, &cve) || errors.As(err, &uae) || errors.As(err, &he) || errors.As(err, &cie) {
		return &permanentError{fmt.Errorf("%s: the smarthost's certificate does not verify: %w", what, err)}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// relayConn is one open connection to the smarthost.
type relayConn struct {
	c     *smtp.Client
	relay Relay
	stop  func() bool
}

// dial connects, secures and logs in. Errors are *permanentError,
// *smtp.SMTPError (by code) or temporary.
func (r Relay) dial(ctx context.Context, hostname string) (*relayConn, error) {
	d := net.Dialer{Timeout: r.timeout()}
	raw, err := d.DialContext(ctx, "tcp", r.Addr)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", r.Addr, err)
	}
	raw = &smarthostConn{Conn: raw, timeout: r.timeout()}
	// Cancelling ctx (the daemon stopping) cuts the connection, which
	// ends any command, after stopGrace: a message whose last reply is on
	// its way is then recorded as relayed, not sent again after the
	// restart. The loop sends nothing more once ctx is done.
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(stopGrace, func() { raw.Close() }) })
	fail := func(err error) (*relayConn, error) {
		stop()
		raw.Close()
		return nil, err
	}
	host, _, _ := net.SplitHostPort(r.Addr)
	tlsConfig := &tls.Config{ServerName: host, RootCAs: r.RootCAs, MinVersion: tls.VersionTLS12}
	var c *smtp.Client
	switch {
	case r.LMTP:
		c = smtp.NewClientLMTP(raw)
	case r.ImplicitTLS:
		tc := tls.Client(raw, tlsConfig)
		hctx, cancel := context.WithTimeout(ctx, r.timeout())
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			return fail(connError("TLS with "+r.Addr, err))
		}
		c = smtp.NewClient(tc)
	default:
		// go-smtp reads the greeting and sends EHLO and STARTTLS here
		// with its own command timeout (5 minutes), before c's can be
		// set: a smarthost that accepts and never greets held the whole
		// queue that long. The handshake gets r.timeout(), as every
		// command after it, by cutting the connection.
		hctx, cancel := context.WithTimeout(ctx, r.timeout())
		cut := context.AfterFunc(hctx, func() { raw.Close() })
		c, err = smtp.NewClientStartTLS(raw, tlsConfig)
		timedOut := !cut() && ctx.Err() == nil // the cut ran: the time was up
		cancel()
		if timedOut {
			return fail(fmt.Errorf("STARTTLS with %s: no answer within %s", r.Addr, r.timeout()))
		}
		if err != nil {
			if strings.Contains(err.Error(), "doesn't support STARTTLS") {
				return fail(&permanentError{fmt.Errorf("%s does not offer STARTTLS, which is required", r.Addr)})
			}
			return fail(connError("STARTTLS with "+r.Addr, err))
		}
	}
	c.CommandTimeout = r.timeout()
	c.SubmissionTimeout = r.dataTimeout()
	if err := c.Hello(hostname); err != nil {
		return fail(connError("greeting "+r.Addr, err))
	}
	if !r.LMTP {
		if _, ok := c.TLSConnectionState(); !ok {
			return fail(&permanentError{fmt.Errorf("the connection to %s is not encrypted", r.Addr)})
		}
	}
	if r.Username != "" {
		if ok, _ := c.Extension("AUTH"); !ok {
			return fail(&permanentError{fmt.Errorf("%s does not offer AUTH, and a --relay-user is set", r.Addr)})
		}
		if err := c.Auth(sasl.NewPlainClient("", r.Username, r.Password)); err != nil {
			return fail(fmt.Errorf("logging in to %s as %s: %w", r.Addr, r.Username, err))
		}
	}
	return &relayConn{c: c, relay: r, stop: stop}, nil
}

// smarthostConn is the connection to the smarthost, under go-smtp (and
// under TLS), with two bounds go-smtp's client does not have.
//
// Every write has the relay's timeout to go through. go-smtp sets a
// deadline for each command and for the reply to the final dot, but none
// while the message itself is written: a smarthost that answered DATA
// with 354 and then read nothing (a hung server, its window closed) held
// the relay loop, and every message queued behind it, until the
// connection broke, which a peer that keeps its window closed never lets
// happen. Each write is at most a TLS record or textproto's 4 KiB buffer,
// so the bound is on progress, not on the message's size.
//
// What is read between two writes, a reply (or the server's part of the
// TLS handshake), is at most maxReply bytes. go-smtp bounds a reply's
// line (2,000 bytes) but not its number of lines, and net/textproto
// joins them into one string, copying it whole at each line: a greeting
// or an EHLO reply of endless "250-" lines, which anyone on the path can
// send before STARTTLS, took the daemon past 20 GB within the relay's 2
// minutes.
type smarthostConn struct {
	net.Conn
	timeout time.Duration
	read    int // bytes read since the last write
}

// maxReply bounds what the smarthost sends between two of the relay's
// writes: RFC 5321 section 4.5.3.1.5 gives a reply line 512 bytes, and a
// certificate chain in the TLS handshake is tens of KiB.
const maxReply = 1 << 20

func (c *smarthostConn) Write(p []byte) (int, error) {
	c.read = 0
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

func (c *smarthostConn) Read(p []byte) (int, error) {
	if c.read >= maxReply {
		return 0, errReplyTooLong
	}
	if len(p) > maxReply-c.read {
		p = p[:maxReply-c.read]
	}
	n, err := c.Conn.Read(p)
	c.read += n
	return n, err
}

var errReplyTooLong = fmt.Errorf("the smarthost sent over %d bytes without waiting for the relay (a reply or the TLS handshake): not read further", maxReply)

// dataError says what a failure to write the message, or to read the
// reply to its final dot, was when it was a timeout.
func (r Relay) dataError(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%s took none of the message for %s, or gave no reply to its end within %s: %w", r.Addr, r.timeout(), r.dataTimeout(), err)
	}
	return err
}

func (rc *relayConn) close() {
	rc.c.Quit()
	rc.stop()
	rc.c.Close()
}

// abort drops the connection without QUIT (after an I/O error).
func (rc *relayConn) abort() {
	rc.stop()
	rc.c.Close()
}

// rcptResult is the smarthost's answer for one recipient.
type rcptResult struct {
	idx   int
	state int    // rcptRelayed, rcptFailed, or rcptPending (temporary)
	reply string // the reply, for the record and for bounces
	err   error
}

// sendResult is what became of one message's attempt.
type sendResult struct {
	rcpts []rcptResult
	// broken: the connection cannot be used any more (an I/O error or a
	// 421); the attempt counts as a temporary failure.
	broken bool
	// dataSent: the final dot was sent (the duplicate window, see the
	// package comment).
	dataSent bool
}

// send runs one transaction for the pending recipients of m.
func (rc *relayConn) send(m *queued) sendResult {
	var res sendResult
	all := func(state int, err error) sendResult {
		for _, r := range m.rcpts {
			res.rcpts = append(res.rcpts, rcptResult{idx: r.idx, state: state, reply: replyText(err), err: err})
		}
		return res
	}
	classify := func(err error) int {
		var se *smtp.SMTPError
		switch {
		case isPermanent(err):
			return rcptFailed
		case errors.As(err, &se) && se.Code != 421:
			return rcptPending
		}
		res.broken = true
		return rcptPending
	}
	utf8 := m.utf8 && needsSMTPUTF8(m)
	if utf8 {
		if ok, _ := rc.c.Extension("SMTPUTF8"); !ok {
			return all(rcptFailed, &permanentError{errors.New("the smarthost does not accept SMTPUTF8, which this message needs")})
		}
	}
	if ok, _ := rc.c.Extension("8BITMIME"); !ok && has8bit(m.data) {
		// RFC 6152 section 3: such a message is converted to 7 bits or
		// returned, never sent as it is, which was done: a smarthost
		// may strip the eighth bit, refuse it, or pass it on to one
		// that does.
		return all(rcptFailed, &permanentError{errors.New("the smarthost does not accept 8-bit data (no 8BITMIME, RFC 6152), which this message holds")})
	}
	opts := &smtp.MailOptions{Size: int64(len(m.data)), UTF8: utf8, Return: smtp.DSNReturn(m.ret), EnvelopeID: m.envid}
	if err := rc.c.Mail(smtpPath(m.sender), opts); err != nil {
		return all(classify(err), err)
	}
	var accepted []int
	for i, r := range m.rcpts {
		err := rc.c.Rcpt(smtpPath(r.address), rcptOptions(r))
		if err == nil {
			accepted = append(accepted, i)
			continue
		}
		state := classify(err)
		res.rcpts = append(res.rcpts, rcptResult{idx: r.idx, state: state, reply: replyText(err), err: err})
		if res.broken {
			for _, rest := range m.rcpts[i+1:] {
				res.rcpts = append(res.rcpts, rcptResult{idx: rest.idx, state: rcptPending, reply: replyText(err), err: err})
			}
			for _, a := range accepted {
				res.rcpts = append(res.rcpts, rcptResult{idx: m.rcpts[a].idx, state: rcptPending, reply: replyText(err), err: err})
			}
			return res
		}
	}
	if len(accepted) == 0 {
		if err := rc.c.Reset(); err != nil {
			res.broken = true
		}
		return res
	}
	acceptedAll := func(state int, reply string, err error) sendResult {
		for _, a := range accepted {
			res.rcpts = append(res.rcpts, rcptResult{idx: m.rcpts[a].idx, state: state, reply: reply, err: err})
		}
		return res
	}
	w, err := rc.c.Data()
	if err != nil {
		return acceptedAll(classify(err), replyText(err), err)
	}
	if _, err := w.Write(submit.StripBcc(m.data)); err != nil {
		err = rc.relay.dataError(err)
		res.broken = true
		return acceptedAll(rcptPending, replyText(err), err)
	}
	res.dataSent = true
	if rc.relay.LMTP {
		// One reply per recipient (RFC 2033 section 4.2).
		resps, err := w.CloseWithLMTPResponse()
		var perRcpt smtp.LMTPDataError
		if err != nil && !errors.As(err, &perRcpt) {
			return acceptedAll(classify(err), replyText(err), err)
		}
		// go-smtp keys the replies by the path given to Rcpt, quoted
		// when the local part is not a dot-atom: looked up by the
		// address as queued, such a recipient got no outcome, stayed
		// pending with its next try at once, and was delivered again
		// at every pass.
		for _, a := range accepted {
			r := m.rcpts[a]
			path := smtpPath(r.address)
			if se := perRcpt[path]; se != nil {
				res.rcpts = append(res.rcpts, rcptResult{idx: r.idx, state: classify(se), reply: replyText(se), err: se})
			} else if resp := resps[path]; resp != nil {
				res.rcpts = append(res.rcpts, rcptResult{idx: r.idx, state: rcptRelayed, reply: "250 " + resp.StatusText})
			} else {
				// No reply of its own (the connection broke among
				// the replies): a temporary failure, tried again
				// after the backoff, never at once, on a new
				// connection.
				res.broken = true
				err := fmt.Errorf("%s gave no reply for this recipient after the message", rc.relay.Addr)
				res.rcpts = append(res.rcpts, rcptResult{idx: r.idx, state: rcptPending, reply: replyText(err), err: err})
			}
		}
		return res
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		err = rc.relay.dataError(err)
		return acceptedAll(classify(err), replyText(err), err)
	}
	return acceptedAll(rcptRelayed, "250 "+resp.StatusText, nil)
}

// needsSMTPUTF8 reports whether m needs SMTPUTF8 (RFC 6531 section 3.2):
// an envelope address, or a header field (RFC 6532), beyond ASCII. A
// client may ask for SMTPUTF8 for a message that needs none, and RFC 6531
// says such a message should be sent without it: it was refused, and
// bounced, by a smarthost that does not offer SMTPUTF8. Bytes beyond
// ASCII in the body are 8BITMIME's.
func needsSMTPUTF8(m *queued) bool {
	if has8bit([]byte(m.sender)) || has8bit(m.data[:submit.HeaderEnd(m.data)]) {
		return true
	}
	for _, r := range m.rcpts {
		if has8bit([]byte(r.address)) {
			return true
		}
	}
	return false
}

// has8bit reports whether b holds a byte beyond ASCII.
func has8bit(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return true
		}
	}
	return false
}

func rcptOptions(r queuedRcpt) *smtp.RcptOptions {
	o := &smtp.RcptOptions{}
	for _, n := range r.notify {
		o.Notify = append(o.Notify, smtp.DSNNotify(n))
	}
	if typ, addr, ok := strings.Cut(r.orcpt, ";"); ok {
		o.OriginalRecipientType = smtp.DSNAddressType(strings.ToUpper(typ))
		o.OriginalRecipient = addr
	}
	return o
}

// replyText is an error as the smarthost said it, or our description.
func replyText(err error) string {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		s := fmt.Sprintf("%d", se.Code)
		if se.EnhancedCode != smtp.NoEnhancedCode && se.EnhancedCode != smtp.EnhancedCodeNotSet {
			s += fmt.Sprintf(" %d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
		}
		return s + " " + strings.ReplaceAll(se.Message, "\n", " ")
	}
	if err == nil {
		return ""
	}
	return err.Error()
}

// smtpPath is addr as the path of a MAIL or RCPT command (RFC 5321 section
// 4.1.2). The submission listener hands over addresses with the local
// part unquoted ("john doe"@example.org as john doe@example.org); one
// that is not a dot-atom is quoted again, with \ before " and \, so the
// smarthost reads the mailbox the client named (unquoted it refused
// the address, 501, or read a space as the end of the path).
func smtpPath(addr string) string {
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 {
		return addr
	}
	local := addr[:at]
	if dotAtom(local) {
		return addr
	}
	var b strings.Builder
	b.Grow(len(addr) + 4)
	b.WriteByte('"')
	for i := 0; i < len(local); i++ {
		if c := local[i]; c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(local[i])
	}
	b.WriteByte('"')
	b.WriteString(addr[at:])
	return b.String()
}

// dotAtom reports whether s is a dot-atom (RFC 5322 section 3.2.3): atext
// (with any byte above ASCII, RFC 6531) between single dots.
func dotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 0x80, c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.':
		case strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
