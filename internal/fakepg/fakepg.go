// Package fakepg is a tiny server speaking the PostgreSQL wire protocol, for
// tests of how pgcoord treats servers that are not PostgreSQL but say they
// are (CockroachDB, whose advisory-lock functions succeed without locking,
// cannot run in the tests). It is not PostgreSQL: it accepts any user
// without a password, sends the startup parameters it is given, and answers
// each simple-protocol query with what its Handler returns. Extended-protocol
// messages (Parse, Bind, ...) are refused with an error until the next Sync,
// as a server refuses a statement it does not support.
package fakepg

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Type OIDs for Column.
const (
	Bool uint32 = 16
	Int8 uint32 = 20
	Int4 uint32 = 23
	Text uint32 = 25
)

// Column is a result column: its name and type OID.
type Column struct {
	Name string
	OID  uint32
}

// Result is one query's answer: columns and rows of values in text format.
type Result struct {
	Columns []Column
	Rows    [][]string
}

// Error is returned by a Handler to answer with an ErrorResponse.
type Error struct{ Code, Message string }

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Session is one client connection, as a Handler sees it.
type Session struct {
	// PID is the backend process id the session reported
	// (BackendKeyData); each session has its own.
	PID int32
}

// Handler answers a simple-protocol query.
type Handler func(s *Session, sql string) (Result, error)

// Server is a running fake server; Close stops it.
type Server struct {
	ln      net.Listener
	params  map[string]string
	handler Handler
	nextPID atomic.Int32

	mu      sync.Mutex
	conns   map[net.Conn]bool
	queries []string
	closed  bool
	wg      sync.WaitGroup
}

// Start listens on a free loopback port. params are the ParameterStatus
// messages sent at startup (server_version, crdb_version, ...).
func Start(params map[string]string, h Handler) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln, params: params, handler: h, conns: map[net.Conn]bool{}}
	s.nextPID.Store(40000)
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// URL is a connection string for the server (no TLS, no password).
func (s *Server) URL() string {
	return fmt.Sprintf("postgres://fake@%s/fake?sslmode=disable", s.ln.Addr())
}

// Queries returns every simple-protocol query received so far, in order.
func (s *Server) Queries() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.queries...)
}

// Close stops listening, closes every connection and waits for their
// goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = c.Close()
			return
		}
		s.conns[c] = true
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			_ = s.serve(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			_ = c.Close()
		}()
	}
}

func (s *Server) serve(c net.Conn) error {
	be := pgproto3.NewBackend(c, c)
	sess := &Session{PID: s.nextPID.Add(1)}
	if err := s.startup(be, c, sess); err != nil {
		return err
	}
	skipping := false // after an extended-protocol error, until Sync
	for {
		msg, err := be.Receive()
		if err != nil {
			return err
		}
		switch m := msg.(type) {
		case *pgproto3.Query:
			s.mu.Lock()
			s.queries = append(s.queries, m.String)
			s.mu.Unlock()
			s.answer(be, sess, m.String)
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		case *pgproto3.Sync:
			skipping = false
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		case *pgproto3.Terminate:
			return nil
		case *pgproto3.Parse, *pgproto3.Bind, *pgproto3.Describe, *pgproto3.Execute, *pgproto3.Close:
			if !skipping {
				skipping = true
				be.Send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: "0A000", Message: "fakepg: extended protocol not supported"})
			}
		case *pgproto3.Flush:
		default:
			return fmt.Errorf("fakepg: unexpected %T", msg)
		}
		if err := be.Flush(); err != nil {
			return err
		}
	}
}

func (s *Server) startup(be *pgproto3.Backend, c net.Conn, sess *Session) error {
	for {
		msg, err := be.ReceiveStartupMessage()
		if err != nil {
			return err
		}
		switch msg.(type) {
		case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
			// No TLS here: 'N' and the client goes on in the clear (or
			// gives up, as sslmode=require would).
			if _, err := c.Write([]byte("N")); err != nil {
				return err
			}
			continue
		case *pgproto3.StartupMessage:
		case *pgproto3.CancelRequest:
			return errors.New("fakepg: cancel request ignored")
		default:
			return fmt.Errorf("fakepg: unexpected startup %T", msg)
		}
		break
	}
	be.Send(&pgproto3.AuthenticationOk{})
	for k, v := range s.params {
		be.Send(&pgproto3.ParameterStatus{Name: k, Value: v})
	}
	be.Send(&pgproto3.BackendKeyData{ProcessID: uint32(sess.PID), SecretKey: []byte{0, 0, 0, 1}})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	return be.Flush()
}

func (s *Server) answer(be *pgproto3.Backend, sess *Session, sql string) {
	res, err := s.handler(sess, sql)
	if err != nil {
		e := &Error{Code: "XX000", Message: err.Error()}
		errors.As(err, &e)
		be.Send(&pgproto3.ErrorResponse{Severity: "ERROR", Code: e.Code, Message: e.Message})
		return
	}
	fields := make([]pgproto3.FieldDescription, len(res.Columns))
	for i, col := range res.Columns {
		fields[i] = pgproto3.FieldDescription{Name: []byte(col.Name), DataTypeOID: col.OID, DataTypeSize: -1, TypeModifier: -1}
	}
	be.Send(&pgproto3.RowDescription{Fields: fields})
	for _, row := range res.Rows {
		values := make([][]byte, len(row))
		for i, v := range row {
			values[i] = []byte(v)
		}
		be.Send(&pgproto3.DataRow{Values: values})
	}
	be.Send(&pgproto3.CommandComplete{CommandTag: []byte(fmt.Sprintf("SELECT %d", len(res.Rows)))})
}
