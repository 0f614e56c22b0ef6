package submit

import (
	"github.com/emersion/go-sasl"
)

// loginServer is the server side of the LOGIN mechanism
// (draft-murchison-sasl-login): the user name and the password, each asked
// for with a challenge. go-sasl has only the client side; mail clients
// still offer LOGIN where PLAIN is missing.
type loginServer struct {
	step     int
	user     string
	validate func(user, password string) error
}

func newLoginServer(validate func(user, password string) error) sasl.Server {
	return &loginServer{validate: validate}
}

func (s *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch s.step {
	case 0:
		s.step = 1
		if response == nil {
			return []byte("Username:"), false, nil
		}
		// An initial response is the user name.
		fallthrough
	case 1:
		s.user = string(response)
		s.step = 2
		return []byte("Password:"), false, nil
	case 2:
		s.step = 3
		return nil, true, s.validate(s.user, string(response))
	}
	return nil, false, sasl.ErrUnexpectedClientResponse
}
