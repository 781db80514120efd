// certwatch: grpc-go's file-watcher certificate provider (credentials/tls/certprovider/pemfile, the
// plugin behind the bootstrap's `file_watcher`) on one instance's files; prints a JSON line each
// time the identity certificate it serves changes, so a test sees rotation picked up without a
// restart. Usage: certwatch -dir CERTS/INSTANCE -refresh 500ms -for 10s
package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc/credentials/tls/certprovider/pemfile"
)

func main() {
	dir := flag.String("dir", "", "folder with cert-chain.pem, key.pem, root-cert.pem")
	refresh := flag.Duration("refresh", 500*time.Millisecond, "the provider's refresh interval")
	duration := flag.Duration("for", 10*time.Second, "how long to watch")
	flag.Parse()
	provider, err := pemfile.NewProvider(pemfile.Options{
		CertFile: filepath.Join(*dir, "cert-chain.pem"), KeyFile: filepath.Join(*dir, "key.pem"),
		RootFile: filepath.Join(*dir, "root-cert.pem"), RefreshDuration: *refresh,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "pemfile:", err)
		os.Exit(1)
	}
	defer provider.Close()
	out := json.NewEncoder(os.Stdout)
	last := ""
	deadline := time.Now().Add(*duration)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		km, err := provider.KeyMaterial(ctx)
		cancel()
		if err == nil && len(km.Certs) > 0 && len(km.Certs[0].Certificate) > 0 {
			leaf, perr := x509.ParseCertificate(km.Certs[0].Certificate[0])
			if perr == nil && leaf.SerialNumber.Text(16) != last {
				last = leaf.SerialNumber.Text(16)
				uris := []string{}
				for _, u := range leaf.URIs {
					uris = append(uris, u.String())
				}
				_, verr := leaf.Verify(x509.VerifyOptions{Roots: km.Roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
				out.Encode(map[string]any{"serial": last, "uris": uris, "not_after": leaf.NotAfter.UTC().Format(time.RFC3339),
					"verified": verr == nil, "at": time.Now().UTC().Format("2006-01-02T15:04:05.000000Z07:00")})
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}
