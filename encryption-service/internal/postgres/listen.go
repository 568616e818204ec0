package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Listen's connection settings.
const (
	listenMinBackoff        = 100 * time.Millisecond
	listenMaxBackoff        = 5 * time.Second
	listenHealthCheckPeriod = 2 * time.Second
	listenPingTimeout       = 2 * time.Second
	listenApplicationName   = "custos-encryption-service-listener"
)

// UnheardMaxAge is how long a replica trusts what it cached (key contexts, tenant secrets) while
// Listen is not connected and changes of other replicas go unheard: a version disabled or
// destroyed, or a secret revoked, elsewhere then takes effect here within it.
const UnheardMaxAge = time.Second

// ListenSilentBreakBound bounds how long a silently broken listening connection (half-open TCP:
// the database or the network gone without closing it) can pass for a working one: an idle
// connection is pinged every 2 s and must answer within 2 s. Until then changes go unheard while
// the caller believes it hears them.
const ListenSilentBreakBound = listenHealthCheckPeriod + listenPingTimeout

// Listen keeps a dedicated connection LISTENing on custos_es_changes until ctx is done, calling onChange for each notification
// and onReset after every (re)connection (missed notifications are unknowable, so the caller must drop its whole cache),
// and onLost when a connection that was listening ends (until the next onReset, changes go unheard: a caller that
// caches should trust its entries only briefly meanwhile).
// Reconnects with capped exponential backoff (100 ms … 5 s); returns nil when ctx is cancelled.
//
// The connection is its own, not one of a pool's, and is opened from
// databaseURL like [Open]'s (application_name defaults to
// "custos-encryption-service-listener"). onChange receives the kind
// ([ChangeTenant], [ChangeEncryption]) and id of what a committed transaction
// of any replica's [Store] changed; notifications that do not parse are
// logged and skipped. onReset is called once LISTEN is in effect, so no
// change falls between the reset and the first onChange; onLost once that
// session has ended, also when ctx ends it. All three run on Listen's
// goroutine, one at a time, and should return quickly. The backoff restarts
// from 100 ms after each successful connection. A connection idle for 2 s is
// pinged and must answer within 2 s, so that a silently broken one is
// reported lost (onLost) within [ListenSilentBreakBound] and replaced.
//
// Listen returns an error only when databaseURL does not parse (without
// echoing it). Connection failures are logged to logger (nil discards) and
// retried.
func Listen(ctx context.Context, databaseURL string, logger *slog.Logger, onChange func(kind string, id uuid.UUID), onReset, onLost func()) error {
	cfg, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		return parseURLError(databaseURL, err)
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = defaultConnectTimeout
	}
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = listenApplicationName
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if onChange == nil {
		onChange = func(string, uuid.UUID) {}
	}
	if onReset == nil {
		onReset = func() {}
	}
	if onLost == nil {
		onLost = func() {}
	}
	l := &listener{cfg: cfg, logger: logger, onChange: onChange, onReset: onReset}

	delay := listenMinBackoff
	for {
		connected, err := l.session(ctx)
		if connected {
			onLost()
		}
		if ctx.Err() != nil {
			return nil
		}
		if connected {
			delay = listenMinBackoff
		}
		logger.WarnContext(ctx, "change listener disconnected; reconnecting",
			"channel", changesChannel, "error", err, "retry_in", delay)
		timer := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		}
		delay = min(delay*2, listenMaxBackoff)
	}
}

type listener struct {
	cfg      *pgx.ConnConfig
	logger   *slog.Logger
	onChange func(kind string, id uuid.UUID)
	onReset  func()
}

// session connects, listens and dispatches notifications until the
// connection fails or ctx is done. connected reports whether LISTEN took
// effect; err is why the session ended.
func (l *listener) session(ctx context.Context) (connected bool, err error) {
	conn, err := pgx.ConnectConfig(ctx, l.cfg)
	if err != nil {
		return false, fmt.Errorf("connect: %w", err)
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), listenPingTimeout)
		defer cancel()
		_ = conn.Close(closeCtx) // the session is over either way
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{changesChannel}.Sanitize()); err != nil {
		return false, fmt.Errorf("listen: %w", err)
	}
	l.logger.InfoContext(ctx, "change listener connected", "channel", changesChannel,
		"backend_pid", conn.PgConn().PID())
	l.onReset()

	for {
		waitCtx, cancel := context.WithTimeout(ctx, listenHealthCheckPeriod)
		n, err := conn.WaitForNotification(waitCtx)
		idle := waitCtx.Err() != nil && ctx.Err() == nil
		cancel()
		switch {
		case ctx.Err() != nil:
			return true, ctx.Err()
		case err != nil && idle && pgconn.Timeout(err) && !conn.IsClosed():
			// Nothing for a while: make sure the connection still works,
			// since a half-open TCP connection would wait forever.
			pingCtx, cancel := context.WithTimeout(ctx, listenPingTimeout)
			err := conn.Ping(pingCtx)
			cancel()
			if err != nil {
				return true, fmt.Errorf("health check: %w", err)
			}
		case err != nil:
			return true, fmt.Errorf("wait for notification: %w", err)
		default:
			l.dispatch(ctx, n)
		}
	}
}

// dispatch passes a "<kind>:<uuid>" notification to onChange.
func (l *listener) dispatch(ctx context.Context, n *pgconn.Notification) {
	kind, idText, ok := strings.Cut(n.Payload, ":")
	id, err := uuid.Parse(idText)
	if !ok || kind == "" || err != nil {
		l.logger.WarnContext(ctx, "change listener: skipping a malformed notification",
			"channel", n.Channel, "payload_length", len(n.Payload), "sender_pid", n.PID)
		return
	}
	l.onChange(kind, id)
}
