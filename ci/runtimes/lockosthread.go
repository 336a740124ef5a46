// Go with cgo: N goroutines, one at a time, that lock their OS thread and exit while locked, so that the
// runtime ends the thread (runtime.LockOSThread); cgo threads are created with pthread_create and
// detached. With THREADLEAK_OUTSIDE set, prints READY once done and waits, for ci/runtimes.py.
package main

// #include <stdlib.h>
import "C"

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"
)

func main() {
	n, _ := strconv.Atoi(os.Args[2])
	done := make(chan bool)
	for i := 0; i < n; i++ {
		go func() {
			runtime.LockOSThread()
			done <- true
		}()
		<-done
	}
	C.free(C.malloc(1))
	time.Sleep(200 * time.Millisecond)
	if os.Getenv("THREADLEAK_OUTSIDE") != "" {
		fmt.Println("READY")
		time.Sleep(3 * time.Second)
	}
}
