package mesh

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"regexp"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

func decodeLines(t *testing.T, b *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("not JSON: %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

func TestLogLinesCarryContractKeysAndTraceIDs(t *testing.T) {
	var buf bytes.Buffer
	log := NewLogger(&buf, slog.LevelInfo, "inventory", "inventory-7")
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())
	ctx, span := tp.Tracer("test").Start(context.Background(), "op")
	log.InfoContext(ctx, "in span", "k", "v")
	span.End()
	log.WarnContext(context.Background(), "no span")
	log.Debug("hidden at info")

	lines := decodeLines(t, &buf)
	if len(lines) != 2 {
		t.Fatalf("got %d lines: %v", len(lines), lines)
	}
	first := lines[0]
	sc := span.SpanContext()
	want := map[string]any{
		"severity": "INFO", "message": "in span", "service.name": "inventory",
		"service.instance.id": "inventory-7", "trace_id": sc.TraceID().String(),
		"span_id": sc.SpanID().String(), "k": "v",
	}
	for k, v := range want {
		if first[k] != v {
			t.Errorf("%s = %v, want %v", k, first[k], v)
		}
	}
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`).MatchString(first["timestamp"].(string)) {
		t.Errorf("timestamp = %v, want RFC 3339 UTC with ms", first["timestamp"])
	}
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(first["trace_id"].(string)) {
		t.Errorf("trace_id = %v", first["trace_id"])
	}
	for _, k := range []string{"time", "level", "msg"} {
		if _, ok := first[k]; ok {
			t.Errorf("slog's own key %q still present", k)
		}
	}
	second := lines[1]
	if second["severity"] != "WARN" {
		t.Errorf("severity = %v", second["severity"])
	}
	if _, ok := second["trace_id"]; ok {
		t.Errorf("trace_id without a span: %v", second)
	}
	// The keys come in the contract's order.
	raw := strings.SplitN(buf.String(), "\n", 2)[0]
	order := []string{`"timestamp"`, `"severity"`, `"message"`, `"service.name"`, `"service.instance.id"`, `"trace_id"`, `"span_id"`, `"k"`}
	last := -1
	for _, k := range order {
		i := strings.Index(raw, k)
		if i <= last {
			t.Fatalf("key %s out of order in %s", k, raw)
		}
		last = i
	}
}
