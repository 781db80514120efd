package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// helperEnv makes the test binary act as one replica (see TestMain): it opens the store, prints
// "ready", waits for a line on stdin, reserves one unit under each of helperReservations ids at
// once and prints "held N short M".
const (
	helperEnv          = "INVENTORY_STORE_HELPER_DB"
	helperPrefixEnv    = "INVENTORY_STORE_HELPER_PREFIX"
	helperReservations = 25
)

func TestMain(m *testing.M) {
	if path := os.Getenv(helperEnv); path != "" {
		os.Exit(replica(path, os.Getenv(helperPrefixEnv)))
	}
	os.Exit(m.Run())
}

func replica(path, prefix string) int {
	ctx := context.Background()
	s, err := Open(ctx, path, map[string]int64{"last": 1000}) // must not overwrite live stock
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer s.Close()
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		fmt.Fprintln(os.Stderr, "no start signal:", err)
		return 1
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	held, short := 0, 0
	var failed error
	for i := range helperReservations {
		wg.Go(func() {
			_, err := s.Reserve(ctx, fmt.Sprintf("%s-%d", prefix, i), []Item{{"last", 1}})
			var oos *OutOfStockError
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				held++
			case errors.As(err, &oos):
				short++
			default:
				failed = errors.Join(failed, err)
			}
		})
	}
	wg.Wait()
	if failed != nil {
		fmt.Fprintln(os.Stderr, failed)
		return 1
	}
	fmt.Printf("held %d short %d\n", held, short)
	return 0
}

type replicaProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
	stderr strings.Builder
}

// Two processes on one file, as the two replicas run, released at once: exactly `stock` units are
// held in all.
func TestTwoProcessesConserveStock(t *testing.T) {
	const stock = 30 // fewer than the 2 x helperReservations asked for
	s, path := openTemp(t, map[string]int64{"last": stock})
	procs := make([]*replicaProc, 2)
	for i := range procs {
		p := &replicaProc{cmd: exec.Command(os.Args[0], "-test.run=^$")}
		p.cmd.Env = append(os.Environ(), helperEnv+"="+path, fmt.Sprintf("%s=p%d", helperPrefixEnv, i))
		p.cmd.Stderr = &p.stderr
		var err error
		if p.stdin, err = p.cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		out, err := p.cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		p.stdout = bufio.NewReader(out)
		if err := p.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.cmd.Process.Kill(); _ = p.cmd.Wait() })
		procs[i] = p
	}
	for i, p := range procs {
		if line, err := p.stdout.ReadString('\n'); line != "ready\n" {
			t.Fatalf("replica %d: %q, %v: %s", i, line, err, p.stderr.String())
		}
	}
	for _, p := range procs {
		fmt.Fprintln(p.stdin, "go")
	}
	total := 0
	for i, p := range procs {
		line, err := p.stdout.ReadString('\n')
		var held, short int
		if _, serr := fmt.Sscanf(line, "held %d short %d", &held, &short); serr != nil {
			t.Fatalf("replica %d output %q (%v): %s", i, line, err, p.stderr.String())
		}
		if held+short != helperReservations {
			t.Fatalf("replica %d: held %d + short %d != %d", i, held, short, helperReservations)
		}
		t.Logf("replica %d: held %d short %d", i, held, short)
		total += held
		if err := p.cmd.Wait(); err != nil {
			t.Fatalf("replica %d: %v: %s", i, err, p.stderr.String())
		}
	}
	if total != stock {
		t.Fatalf("held %d units in all, want %d", total, stock)
	}
	if a := available(t, s, "last"); a != 0 {
		t.Fatalf("available = %d, want 0", a)
	}
}
