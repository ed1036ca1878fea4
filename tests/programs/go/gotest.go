// gotest: the static Go test program of tests/tests/programs.rs, one subcommand per case.
// Built by the tests with `CGO_ENABLED=0 go build -trimpath -ldflags=-s` (Debian's Go
// 1.19), so the binary is static and uses the Go runtime's own threads (clone), futexes,
// timers and signals. Each subcommand prints a distinctive last line on success and exits
// 0; a failed check prints a line saying what and exits 1.
//
//	gotest goroutines            1000 goroutines in a ring of channels, a checksum
//	gotest timers                a ticker ticking 5 times, a 200 ms sleep measured
//	gotest gc                    256 MiB of small objects allocated and dropped, runtime.GC
//	gotest numcpu                runtime.NumCPU() and GOMAXPROCS
//	gotest panic                 panics: exit 2, `panic: gotest: deliberate panic` on stderr
//	gotest httpserver PORT [N]   serves a fixed body on 127.0.0.1:PORT (N requests, then exits)
//	gotest httpget URL           fetches URL with net/http and prints the body
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync"
	"time"
)

// HTTPBody is what the httpserver subcommand answers to every request.
const HTTPBody = "hello from the gotest http server\n"

func fail(format string, args ...interface{}) {
	fmt.Printf("gotest: FAILED: "+format+"\n", args...)
	os.Exit(1)
}

// goroutines starts n goroutines in a ring: goroutine i receives a value from channel i,
// mixes its index in and sends it on channel i+1; the main goroutine feeds the ring
// `rounds` values and sums what comes out of its end.
func goroutines() {
	const n = 1000
	const rounds = 100
	chans := make([]chan uint64, n+1)
	for i := range chans {
		chans[i] = make(chan uint64)
	}
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for v := range chans[i] {
				chans[i+1] <- v*31 + uint64(i)
			}
			close(chans[i+1])
		}(i)
	}
	var sum uint64
	done := make(chan struct{})
	go func() {
		for v := range chans[n] {
			sum += v
		}
		close(done)
	}()
	for r := uint64(1); r <= rounds; r++ {
		chans[0] <- r
	}
	close(chans[0])
	wg.Wait()
	<-done
	// The same ring computed in one goroutine.
	var want uint64
	for r := uint64(1); r <= rounds; r++ {
		v := r
		for i := 0; i < n; i++ {
			v = v*31 + uint64(i)
		}
		want += v
	}
	if sum != want {
		fail("goroutines: checksum %d, want %d", sum, want)
	}
	fmt.Printf("goroutines: %d goroutines passed %d values, checksum %d ok\n", n, rounds, sum)
}

// timers: a 10 ms ticker ticks 5 times, then a 200 ms sleep must last at least 200 ms.
func timers() {
	const ticks = 5
	start := time.Now()
	t := time.NewTicker(10 * time.Millisecond)
	for i := 0; i < ticks; i++ {
		<-t.C
	}
	t.Stop()
	tickTime := time.Since(start)
	if tickTime < ticks*10*time.Millisecond {
		fail("timers: %d ticks of 10 ms took only %v", ticks, tickTime)
	}
	start = time.Now()
	time.Sleep(200 * time.Millisecond)
	slept := time.Since(start)
	if slept < 200*time.Millisecond {
		fail("timers: time.Sleep(200ms) returned after %v", slept)
	}
	timer := time.NewTimer(50 * time.Millisecond)
	start = time.Now()
	select {
	case <-timer.C:
	case <-time.After(10 * time.Second):
		fail("timers: a 50 ms timer did not fire within 10 s")
	}
	fired := time.Since(start)
	fmt.Printf("timers: ticks took %d ms, sleep took %d ms, timer took %d ms\n",
		tickTime.Milliseconds(), slept.Milliseconds(), fired.Milliseconds())
	fmt.Printf("timers: %d ticks, slept >= 200 ms, timer fired ok\n", ticks)
}

type node struct {
	next  *node
	value [6]uint64
}

// gc allocates 256 MiB in total in 64-byte objects, keeping only a short chain alive,
// then forces a collection.
func gc() {
	const objects = 4 << 20 // 4 Mi objects of 64 bytes = 256 MiB
	var keep *node
	var sum uint64
	for i := 0; i < objects; i++ {
		n := &node{value: [6]uint64{uint64(i)}}
		if i%4096 == 0 {
			// Every 4096th object stays, the rest are garbage at once.
			n.next = keep
			keep = n
		}
		sum += n.value[0]
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	kept := 0
	for n := keep; n != nil; n = n.next {
		kept++
	}
	if kept != objects/4096 {
		fail("gc: %d objects kept, want %d", kept, objects/4096)
	}
	fmt.Printf("gc: allocated %d MiB in %d objects, %d kept, heap in use %d MiB, NumGC %d, sum %d\n",
		ms.TotalAlloc>>20, objects, kept, ms.HeapInuse>>20, ms.NumGC, sum)
	if ms.NumGC == 0 {
		fail("gc: no collection ran")
	}
	fmt.Printf("gc: NumGC > 0: true\n")
}

func numcpu() {
	fmt.Printf("numcpu: NumCPU=%d GOMAXPROCS=%d\n", runtime.NumCPU(), runtime.GOMAXPROCS(0))
}

func httpserver(args []string) {
	if len(args) < 1 {
		fail("usage: gotest httpserver PORT [REQUESTS]")
	}
	port, err := strconv.Atoi(args[0])
	if err != nil || port <= 0 || port > 65535 {
		fail("httpserver: bad port %q", args[0])
	}
	limit := -1
	if len(args) > 1 {
		if limit, err = strconv.Atoi(args[1]); err != nil || limit <= 0 {
			fail("httpserver: bad request count %q", args[1])
		}
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		fail("httpserver: listen: %v", err)
	}
	fmt.Printf("httpserver: listening on %s\n", ln.Addr())
	var mu sync.Mutex
	served := 0
	finished := make(chan struct{})
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, HTTPBody)
		mu.Lock()
		served++
		if served == limit {
			close(finished)
		}
		mu.Unlock()
	})
	srv := &http.Server{Handler: handler}
	go func() {
		if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
			fail("httpserver: serve: %v", err)
		}
	}()
	<-finished
	// Let the last answer leave before the listener closes.
	time.Sleep(100 * time.Millisecond)
	srv.Close()
	fmt.Printf("httpserver: served %d requests\n", limit)
}

func httpget(args []string) {
	if len(args) != 1 {
		fail("usage: gotest httpget URL")
	}
	resp, err := http.Get(args[0])
	if err != nil {
		fail("httpget: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		fail("httpget: reading the body: %v", err)
	}
	fmt.Printf("httpget: %s %q\n", resp.Status, body)
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: gotest goroutines|timers|gc|numcpu|panic|httpserver PORT [N]|httpget URL")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "goroutines":
		goroutines()
	case "timers":
		timers()
	case "gc":
		gc()
	case "numcpu":
		numcpu()
	case "panic":
		panic("gotest: deliberate panic")
	case "httpserver":
		httpserver(os.Args[2:])
	case "httpget":
		httpget(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "gotest: unknown subcommand %q\n", os.Args[1])
		os.Exit(2)
	}
}
