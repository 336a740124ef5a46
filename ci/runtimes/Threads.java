// OpenJDK: N threads joined one by one (`join`), or daemon threads never joined (`detach`), up to 16
// unfinished at once. With THREADLEAK_OUTSIDE set, prints READY once done and waits, for ci/runtimes.py.
import java.util.concurrent.atomic.AtomicInteger;

public class Threads {
    public static void main(String[] args) throws Exception {
        boolean join = args[0].equals("join");
        int n = Integer.parseInt(args[1]);
        AtomicInteger done = new AtomicInteger();
        for (int i = 0; i < n; i++) {
            while (i - done.get() >= 16) Thread.onSpinWait();
            Thread t = new Thread(done::incrementAndGet);
            t.setDaemon(!join);
            t.start();
            if (join) t.join();
        }
        while (done.get() < n) Thread.onSpinWait();
        Thread.sleep(200);
        if (System.getenv("THREADLEAK_OUTSIDE") != null) {
            System.out.println("READY");
            System.out.flush();
            Thread.sleep(3000);
        }
    }
}
