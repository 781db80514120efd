package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestUnaryErrorInterceptor(t *testing.T) {
	var buf bytes.Buffer
	log := NewLogger(&buf, slog.LevelInfo, "inventory", "i-1")
	icpt := UnaryErrorInterceptor(log)
	info := &grpc.UnaryServerInfo{FullMethod: "/shop.inventory.v1.InventoryService/GetStock"}
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(context.Background())
	ctx, span := tp.Tracer("t").Start(context.Background(), "rpc")
	defer span.End()

	call := func(err error, panicWith any) error {
		_, got := icpt(ctx, nil, info, func(context.Context, any) (any, error) {
			if panicWith != nil {
				panic(panicWith)
			}
			return nil, err
		})
		return got
	}
	notFound := status.Error(codes.NotFound, "nope")
	if got := call(notFound, nil); got != notFound {
		t.Fatalf("status error changed: %v", got)
	}
	if got := call(fmt.Errorf("wrapped: %w", context.DeadlineExceeded), nil); status.Code(got) != codes.DeadlineExceeded {
		t.Fatalf("deadline: %v", got)
	}
	for _, c := range []struct {
		err   error
		panic any
		logs  string
	}{
		{errors.New("disk on fire"), nil, "disk on fire"},
		{nil, "boom", "boom"},
	} {
		buf.Reset()
		got := call(c.err, c.panic)
		if st := status.Convert(got); st.Code() != codes.Internal || st.Message() != InternalMessage {
			t.Fatalf("got %v, want INTERNAL %q", got, InternalMessage)
		}
		line := buf.String()
		if !strings.Contains(line, c.logs) || !strings.Contains(line, span.SpanContext().TraceID().String()) {
			t.Fatalf("log line lacks detail or trace id: %s", line)
		}
	}
}
