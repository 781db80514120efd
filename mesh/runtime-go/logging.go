package mesh

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/grpclog"
)

// Log keys of the runtime contract, the same in every language.
const (
	LogKeyTimestamp  = "timestamp"
	LogKeySeverity   = "severity"
	LogKeyMessage    = "message"
	LogKeyService    = "service.name"
	LogKeyInstanceID = "service.instance.id"
	LogKeyTraceID    = "trace_id"
	LogKeySpanID     = "span_id"
)

// timestampLayout is RFC 3339 in UTC with milliseconds, e.g. 2025-01-02T03:04:05.678Z.
const timestampLayout = "2006-01-02T15:04:05.000Z07:00"

// NewLogger returns a JSON-lines logger writing the contract's keys to w. Log with the *Context
// methods (InfoContext, ...) so that trace_id and span_id of the active span are added.
func NewLogger(w io.Writer, level slog.Leveler, serviceName, instanceID string) *slog.Logger {
	h := slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level, ReplaceAttr: renameBuiltins})
	return slog.New(&traceHandler{inner: h}).With(LogKeyService, serviceName, LogKeyInstanceID, instanceID)
}

func renameBuiltins(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 {
		return a
	}
	switch a.Key {
	case slog.TimeKey:
		return slog.String(LogKeyTimestamp, a.Value.Time().UTC().Format(timestampLayout))
	case slog.LevelKey:
		return slog.String(LogKeySeverity, severity(a.Value.Any()))
	case slog.MessageKey:
		a.Key = LogKeyMessage
	}
	return a
}

func severity(v any) string {
	l, ok := v.(slog.Level)
	if !ok {
		return fmt.Sprint(v)
	}
	switch {
	case l >= slog.LevelError:
		return "ERROR"
	case l >= slog.LevelWarn:
		return "WARN"
	case l >= slog.LevelInfo:
		return "INFO"
	default:
		return "DEBUG"
	}
}

// traceHandler puts trace_id and span_id of the context's span before the record's own attributes.
type traceHandler struct{ inner slog.Handler }

func (h *traceHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *traceHandler) Handle(ctx context.Context, r slog.Record) error {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return h.inner.Handle(ctx, r)
	}
	nr := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	nr.AddAttrs(slog.String(LogKeyTraceID, sc.TraceID().String()), slog.String(LogKeySpanID, sc.SpanID().String()))
	r.Attrs(func(a slog.Attr) bool { nr.AddAttrs(a); return true })
	return h.inner.Handle(ctx, nr)
}

func (h *traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &traceHandler{inner: h.inner.WithAttrs(as)}
}

func (h *traceHandler) WithGroup(name string) slog.Handler {
	return &traceHandler{inner: h.inner.WithGroup(name)}
}

// grpcLogger sends gRPC's own log lines through the JSON logger so that stdout stays JSON lines.
// gRPC's INFO chatter goes to DEBUG.
type grpcLogger struct {
	l *slog.Logger
}

// InstallGRPCLogger routes grpclog to l.
func InstallGRPCLogger(l *slog.Logger) {
	grpclog.SetLoggerV2(grpcLogger{l: l.With("logger", "grpc")})
}

func (g grpcLogger) log(level slog.Level, msg string) {
	g.l.Log(context.Background(), level, msg)
}

func (g grpcLogger) Info(args ...any)   { g.log(slog.LevelDebug, fmt.Sprint(args...)) }
func (g grpcLogger) Infoln(args ...any) { g.log(slog.LevelDebug, sprintln(args...)) }
func (g grpcLogger) Infof(format string, args ...any) {
	g.log(slog.LevelDebug, fmt.Sprintf(format, args...))
}
func (g grpcLogger) Warning(args ...any)   { g.log(slog.LevelWarn, fmt.Sprint(args...)) }
func (g grpcLogger) Warningln(args ...any) { g.log(slog.LevelWarn, sprintln(args...)) }
func (g grpcLogger) Warningf(format string, args ...any) {
	g.log(slog.LevelWarn, fmt.Sprintf(format, args...))
}
func (g grpcLogger) Error(args ...any)   { g.log(slog.LevelError, fmt.Sprint(args...)) }
func (g grpcLogger) Errorln(args ...any) { g.log(slog.LevelError, sprintln(args...)) }
func (g grpcLogger) Errorf(format string, args ...any) {
	g.log(slog.LevelError, fmt.Sprintf(format, args...))
}

// Fatal* log and exit, as grpclog's contract requires.
func (g grpcLogger) Fatal(args ...any)   { g.log(slog.LevelError, fmt.Sprint(args...)); exitFatal() }
func (g grpcLogger) Fatalln(args ...any) { g.log(slog.LevelError, sprintln(args...)); exitFatal() }
func (g grpcLogger) Fatalf(format string, args ...any) {
	g.log(slog.LevelError, fmt.Sprintf(format, args...))
	exitFatal()
}

// V reports whether verbosity level l is on; gRPC's verbose logs stay off.
func (g grpcLogger) V(l int) bool {
	return l <= 0 && g.l.Enabled(context.Background(), slog.LevelDebug)
}

func sprintln(args ...any) string {
	s := fmt.Sprintln(args...)
	return s[:len(s)-1]
}

// exitFatal ends the process after a gRPC fatal log line.
func exitFatal() { os.Exit(1) }
