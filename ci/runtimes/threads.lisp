;;; SBCL: N threads joined one by one (`join`), or never joined (`detach`), up to 16 unfinished at once.
;;; With THREADLEAK_OUTSIDE set, prints READY once done and waits, for ci/runtimes.py.
(let* ((args sb-ext:*posix-argv*)
       (mode (second args))
       (n (parse-integer (third args)))
       (done (list 0)))
  (dotimes (i n)
    (if (string= mode "join")
        (sb-thread:join-thread (sb-thread:make-thread (lambda () nil)))
        (progn
          (loop while (>= (- i (car done)) 16) do (sleep 0.0001))
          (sb-thread:make-thread (lambda () (sb-ext:atomic-incf (car done)))))))
  (loop until (or (string= mode "join") (= (car done) n)) do (sleep 0.01))
  (sleep 0.2)
  (when (sb-ext:posix-getenv "THREADLEAK_OUTSIDE")
    (format t "READY~%")
    (finish-output)
    (sleep 3)))
