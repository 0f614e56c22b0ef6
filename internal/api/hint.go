package api

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// transportError classifies a failed round trip: a TLS certificate that
// does not verify is ErrCertificate, a TLS handshake with something that
// does not speak TLS is ErrProtocol (both permanent); anything else is
// ErrTransport (temporary). The cause stays wrapped for errors.As.
func transportError(op string, err error) *Error {
	var cve *tls.CertificateVerificationError
	var uae x509.UnknownAuthorityError
	var he x509.HostnameError
	var cie x509.CertificateInvalidError
	var rhe tls.RecordHeaderError
	var re *RedirectError
	switch {
	case errors.As(err, &re):
		return &Error{Op: op, Status: re.Status, Kind: ErrProtocol, Msg: re.Error(), Err: err}
	case errors.As(err, &cve), errors.As(err, &uae), errors.As(err, &he), errors.As(err, &cie):
		return &Error{Op: op, Kind: ErrCertificate, Msg: err.Error(), Err: err}
	case errors.As(err, &rhe):
		return &Error{Op: op, Kind: ErrProtocol, Msg: "the server does not answer in TLS: " + err.Error(), Err: err}
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		// net/http's own words for the same, without the record error.
		return &Error{Op: op, Kind: ErrProtocol, Msg: "the server answers in plain HTTP, not in TLS", Err: err}
	case strings.Contains(err.Error(), "malformed HTTP"):
		// What answers on that port does not speak HTTP at all.
		return &Error{Op: op, Kind: ErrProtocol, Msg: "the program on that port does not answer in HTTP: " + err.Error(), Err: err}
	}
	return &Error{Op: op, Kind: ErrTransport, Msg: err.Error(), Err: err}
}

// plainHTTPToTLS is the start of what a Go HTTPS server answers to a plain
// HTTP request (status 400, text/plain).
const plainHTTPToTLS = "Client sent an HTTP request to an HTTPS server"

// Hint says what a person must do about err when retrying cannot help, or
// returns "" when err may heal by itself (IsTemporary) or is not an API
// error. The daemon logs it and shows it in its status; cspool deliver
// prints it as its hint.
func Hint(err error) string {
	var e *Error
	if !errors.As(err, &e) || IsTemporary(err) {
		return ""
	}
	switch e.Kind {
	case ErrCertificate:
		var he x509.HostnameError
		var cie x509.CertificateInvalidError
		switch {
		case errors.As(err, &he):
			return fmt.Sprintf("the spool server's certificate is not valid for %s: put a name it was issued for in the spool server URL (docs/TLS.md)", he.Host)
		case errors.As(err, &cie) && cie.Reason == x509.Expired:
			return "the spool server's certificate has expired or is not valid yet: renew it on the server, and check this machine's clock (docs/TLS.md)"
		}
		if h := certFileHint(os.Getenv("SSL_CERT_FILE")); h != "" {
			return h
		}
		return "the spool server's certificate is not signed by a certificate authority this machine trusts: if it comes from a private CA or is self-signed, start this program with SSL_CERT_FILE=/path/to/ca.pem (docs/TLS.md)"
	case ErrUnauthenticated:
		if errors.Is(err, ErrReplayed) {
			// The key was taken: the server had seen the request before.
			return "the spool server got this request twice, and refused the copy: a proxy or load balancer on the way sends requests again " +
				"after the server answered them (for a read, even the one this program signed again); make it retry nothing, " +
				"or only on another server process (docs/TLS.md)"
		}
		return "the spool server refused this key: check that the server's users file (or table) lists this user with the public key matching the secret key given here (cspool keys are in docs/OPERATING.md), and that this machine's clock is right"
	case ErrForbidden:
		if strings.Contains(e.Msg, "the spool key may only append") {
			// A device, or cspool sync, run with the spool's secret key
			// as the user's.
			return "this key is the spool's, which only delivers: a device uses the user's own key pair (--user-key USER.sec, from the user's gen-keys, or copied from another of the user's devices)"
		}
		return "the spool server knows this key as another user's: check the user name given here against the server's users file"
	case ErrProtocol, ErrNotFound, ErrUnsupportedType, ErrBadRequest:
		if e.Kind == ErrBadRequest && strings.Contains(e.Msg, heldBackText) {
			return "the spool's next entry is in an entry format this release of cspool does not read: upgrade cspool on this device; " +
				"with the same database it then reads on from there, and nothing is lost (docs/OPERATING.md, \"Running it\", the entry format)"
		}
		var re *RedirectError
		if errors.As(err, &re) {
			return "a spool's API is never redirected: if the server moved, or its address sends http:// to https://, give the URL it redirects to (scheme and host) as the spool server URL; " +
				"else the spool is sending this device elsewhere, and its operator must answer for it"
		}
		if strings.Contains(e.Msg, entryTooLargeText) {
			return "the spool holds a delivery larger than this device takes, and the device syncs nothing after it (IMAP serves what it has): " +
				"if the spool's operator allows mail that large, start this device with a --max-message-size at least the spool's; " +
				"else it is the spool's doing, and the spool's operator must answer for it (docs/SECURITY.md, \"What a spool can cost a device\")"
		}
		if strings.Contains(e.Msg, "HTTPS") {
			return "the spool server speaks HTTPS: write https:// in the spool server URL"
		}
		if strings.Contains(e.Msg, "TLS") {
			return "the spool server speaks plain HTTP at this address: write http:// in the spool server URL, or point it at the TLS port"
		}
		if strings.Contains(e.Msg, passedOnText) {
			return "a reverse proxy between this device and the spool server must pass the API's answers on unchanged: their Cspool-* headers, Content-Type and body (docs/API.md §7, \"Behind a proxy\"); " +
				"without one, check the spool server URL, and that the server runs the same version of cspool"
		}
		return "check the spool server URL, and that the server runs the same version of cspool"
	}
	return ""
}

// maxCertFile bounds how much of SSL_CERT_FILE certFileHint reads: a
// bundle of every public CA is about 200 KB.
const maxCertFile = 16 << 20

// certFileHint is the hint for a server certificate no trusted CA signed
// when SSL_CERT_FILE is set (path): the variable was set, so telling to
// set it does not help. Go passes over a file it cannot read or that holds
// no certificate without a word, so this says what the file is: missing,
// a folder, no certificate in it (a private key, a cspool key), or
// certificates none of which signed the server's. It never shows the
// file's contents. "" when path is "".
func certFileHint(path string) string {
	if path == "" {
		return ""
	}
	const give = "it takes the CA's certificate, or a self-signed server's own certificate (fullchain.pem; its private key never leaves the server), as PEM (docs/TLS.md)"
	info, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Sprintf("SSL_CERT_FILE names %s, which does not exist, so no certificate of it is trusted: copy the certificate there, or correct the path; %s", path, give)
	case err != nil:
		return fmt.Sprintf("SSL_CERT_FILE names %s, which this program cannot read (%v), so no certificate of it is trusted; %s", path, unwrapPath(err), give)
	case info.IsDir():
		return fmt.Sprintf("SSL_CERT_FILE names %s, a folder, so no certificate of it is trusted (SSL_CERT_DIR takes folders); %s", path, give)
	case info.Size() > maxCertFile:
		return fmt.Sprintf("SSL_CERT_FILE names %s, of %d bytes, not a certificate file; %s", path, info.Size(), give)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("SSL_CERT_FILE names %s, which this program cannot read (%v), so no certificate of it is trusted; %s", path, unwrapPath(err), give)
	}
	certs, other := 0, ""
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			if other == "" {
				other = b.Type
			}
			continue
		}
		if _, err := x509.ParseCertificate(b.Bytes); err == nil {
			certs++
		}
	}
	switch {
	case certs == 0 && other != "":
		return fmt.Sprintf("SSL_CERT_FILE names %s, which holds no certificate but a PEM %s, so no certificate of it is trusted; %s", path, other, give)
	case certs == 0:
		return fmt.Sprintf("SSL_CERT_FILE names %s, which holds no PEM certificate, so no certificate of it is trusted; %s", path, give)
	}
	return fmt.Sprintf("SSL_CERT_FILE names %s, and none of the %d certificates in it signed the spool server's certificate: "+
		"check that it is this spool server's (the server's certificate may have been made again, or the file is another server's); %s", path, certs, give)
}

// unwrapPath is a *fs.PathError's cause, the path being said already.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
