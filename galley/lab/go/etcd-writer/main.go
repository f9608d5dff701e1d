// etcd-writer proves that no write to etcd fails while galley operates on it: it puts one key
// every interval through one etcd client (one gRPC connection, every endpoint, TLS with a
// client certificate), as kube-apiserver writes. A write fails only when no member accepts it
// within the deadline; each failure is printed at once as "failed <error>".
//
// Standard input steers it: each line is a new comma-separated endpoint list (the cluster's
// members as they are now); end of input stops it, and it prints "ok <writes that succeeded>".
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func main() {
	endpoints := flag.String("endpoints", "", "comma-separated client URLs")
	cert := flag.String("cert", "", "client certificate")
	key := flag.String("key", "", "client key")
	cacert := flag.String("cacert", "", "CA of the members' certificates")
	name := flag.String("key-name", "galley-writer", "the key written")
	interval := flag.Duration("interval", 50*time.Millisecond, "pause between writes")
	deadline := flag.Duration("deadline", 5*time.Second, "how long one write may take")
	flag.Parse()
	if err := run(strings.Split(*endpoints, ","), *cert, *key, *cacert, *name, *interval, *deadline); err != nil {
		fmt.Fprintln(os.Stderr, "etcd-writer:", err)
		os.Exit(1)
	}
}

func run(endpoints []string, cert, key, cacert, name string, interval, deadline time.Duration) error {
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return err
	}
	pem, err := os.ReadFile(cacert)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return errors.New(cacert + ": no certificate")
	}
	client, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: deadline,
		TLS:         &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: roots},
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return err
	}
	defer client.Close()

	var stopping atomic.Bool
	go func() {
		lines := bufio.NewScanner(os.Stdin)
		for lines.Scan() {
			if urls := strings.TrimSpace(lines.Text()); urls != "" {
				client.SetEndpoints(strings.Split(urls, ",")...)
			}
		}
		stopping.Store(true)
	}()

	ok := 0
	for !stopping.Load() {
		if err := write(client, name, strconv.Itoa(ok), deadline); err != nil {
			fmt.Println("failed", err)
		} else {
			ok++
		}
		time.Sleep(interval)
	}
	fmt.Println("ok", ok)
	return nil
}

// write puts value, trying again until a member accepts it or the deadline passes.
func write(client *clientv3.Client, key, value string, deadline time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	for {
		attempt, done := context.WithTimeout(ctx, time.Second)
		_, err := client.Put(attempt, key, value)
		done()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}
