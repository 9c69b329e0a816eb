// spymemcached against a server: `java -cp BUILD:spymemcached.jar SpyCases MODE HOST PORT CASE`,
// MODE text (DefaultConnectionFactory) or binary (BinaryConnectionFactory). Clients
// keep every default (operation timeout 2.5 s, SerializingTranscoder). Prints
// JSON lines (stig_testkit/clients.py): {"check", "ok", "got", "want"},
// {"timing", "seconds", "count"}, {"done"}.

import java.io.InputStream;
import java.io.OutputStream;
import java.io.Serializable;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import java.util.concurrent.Future;

import net.spy.memcached.BinaryConnectionFactory;
import net.spy.memcached.CASResponse;
import net.spy.memcached.CASValue;
import net.spy.memcached.CachedData;
import net.spy.memcached.DefaultConnectionFactory;
import net.spy.memcached.MemcachedClient;
import net.spy.memcached.internal.OperationFuture;
import net.spy.memcached.transcoders.Transcoder;

public final class SpyCases {
    /** Stig's default --max-item-size: the largest value it stores. */
    static final int ITEM_LIMIT = 1048576;

    static String mode;
    static String host;
    static int port;
    static final List<MemcachedClient> CLIENTS = new ArrayList<>();

    // -- reporting ---------------------------------------------------------

    static void emit(Map<String, Object> record) {
        System.out.println(json(record));
        System.out.flush();
    }

    static String json(Object v) {
        if (v == null) {
            return "null";
        }
        if (v instanceof Boolean || v instanceof Integer || v instanceof Long) {
            return v.toString();
        }
        if (v instanceof Double) {
            return v.toString();
        }
        if (v instanceof Map<?, ?> map) {
            List<String> parts = new ArrayList<>();
            new java.util.TreeMap<>(map).forEach((k, x) -> parts.add(json(String.valueOf(k)) + ":" + json(x)));
            return "{" + String.join(",", parts) + "}";
        }
        if (v instanceof List<?> list) {
            List<String> parts = new ArrayList<>();
            list.forEach(x -> parts.add(json(x)));
            return "[" + String.join(",", parts) + "]";
        }
        StringBuilder out = new StringBuilder("\"");
        for (char c : v.toString().toCharArray()) {
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                default -> {
                    if (c < 0x20 || c > 0x7e) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
            }
        }
        return out.append('"').toString();
    }

    /** A value as a report shows it: byte arrays and long strings by length and digest. */
    static Object plain(Object v) {
        if (v instanceof byte[] bytes) {
            return "<" + bytes.length + " bytes sha1 " + sha1(bytes) + ">";
        }
        if (v instanceof String s && s.length() > 200) {
            return "<" + s.length() + " chars sha1 " + sha1(s.getBytes(StandardCharsets.UTF_8)) + ">";
        }
        if (v instanceof Throwable t) {
            return t.getClass().getSimpleName() + ": " + t.getMessage();
        }
        if (v instanceof Enum<?> e) {
            return e.name();
        }
        if (v instanceof Short || v instanceof Character) {
            return v.toString();
        }
        if (v instanceof Map<?, ?> map) {
            Map<String, Object> out = new HashMap<>();
            map.forEach((k, x) -> out.put(String.valueOf(k), plain(x)));
            return out;
        }
        if (v instanceof List<?> list) {
            List<Object> out = new ArrayList<>();
            list.forEach(x -> out.add(plain(x)));
            return out;
        }
        return v;
    }

    static String sha1(byte[] bytes) {
        try {
            byte[] d = MessageDigest.getInstance("SHA-1").digest(bytes);
            StringBuilder hex = new StringBuilder();
            for (int i = 0; i < 6; i++) {
                hex.append(String.format("%02x", d[i]));
            }
            return hex.toString();
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }

    static void check(String what, Object got, Object want) {
        Object g = plain(got);
        Object w = plain(want);
        Map<String, Object> record = new LinkedHashMap<>();
        record.put("check", what);
        record.put("ok", json(g).equals(json(w)));
        record.put("got", g);
        record.put("want", w);
        emit(record);
    }

    static <T> T timed(String what, int count, Callable<T> body) throws Exception {
        long start = System.nanoTime();
        T result = body.call();
        Map<String, Object> record = new LinkedHashMap<>();
        record.put("timing", what);
        record.put("seconds", (System.nanoTime() - start) / 1e9);
        record.put("count", count);
        emit(record);
        return result;
    }

    /** A future's outcome as a value: its result, or the exception its get() threw. */
    static Object settle(Future<?> future) {
        try {
            return future.get();
        } catch (Exception e) {
            return e.getCause() != null && !(e instanceof RuntimeException) ? e.getCause() : e;
        }
    }

    /** What an OperationFuture ended with: its result and the server's status message. */
    static List<Object> outcome(OperationFuture<Boolean> future) {
        Object result = settle(future);
        return Arrays.asList(result, future.getStatus().getMessage());
    }

    // -- clients -----------------------------------------------------------

    static MemcachedClient client() throws Exception {
        InetSocketAddress address = new InetSocketAddress(host, port);
        MemcachedClient c = mode.equals("binary")
                ? new MemcachedClient(new BinaryConnectionFactory(), List.of(address))
                : new MemcachedClient(new DefaultConnectionFactory(), List.of(address));
        CLIENTS.add(c);
        return c;
    }

    /** The flags and bytes the server holds for `key` (a plain text get of our own). */
    static Map<String, Object> rawGet(String key) throws Exception {
        try (Socket s = new Socket(host, port)) {
            OutputStream out = s.getOutputStream();
            out.write(("get " + key + "\r\n").getBytes(StandardCharsets.UTF_8));
            out.flush();
            InputStream in = s.getInputStream();
            StringBuilder header = new StringBuilder();
            for (int b = in.read(); b != '\n'; b = in.read()) {
                header.append((char) b);
            }
            String[] words = header.toString().trim().split(" ");
            if (words[0].equals("END")) {
                return null;
            }
            byte[] value = in.readNBytes(Integer.parseInt(words[3]));
            Map<String, Object> result = new HashMap<>();
            result.put("flags", Integer.parseInt(words[2]));
            result.put("value", new String(value, StandardCharsets.ISO_8859_1));
            return result;
        }
    }

    static byte[] randomBytes(int n) {
        byte[] bytes = new byte[n];
        new SecureRandom().nextBytes(bytes);
        return bytes;
    }

    static String multigetKey(int i) {
        return String.format("multiget:%05d:%s", i, "k".repeat(24));
    }

    /** A transcoder of our own: JSON-ish text with flags 42. */
    static final class TaggedText implements Transcoder<String> {
        public boolean asyncDecode(CachedData d) {
            return false;
        }

        public CachedData encode(String o) {
            return new CachedData(42, o.getBytes(StandardCharsets.UTF_8), getMaxSize());
        }

        public String decode(CachedData d) {
            return "flags " + d.getFlags() + ": " + new String(d.getData(), StandardCharsets.UTF_8);
        }

        public int getMaxSize() {
            return CachedData.MAX_SIZE;
        }
    }

    record Point(int x, int y) implements Serializable {
    }

    // -- cases -------------------------------------------------------------

    static void basics() throws Exception {
        MemcachedClient c = client();
        check("set", c.set("b:k", 0, "v1").get(), true);
        check("get", c.get("b:k"), "v1");
        check("get of a missing key", c.get("b:missing"), null);
        check("add of a present key", c.add("b:k", 0, "x").get(), false);
        check("add of a new key", c.add("b:new", 0, "n").get(), true);
        check("replace of a present key", c.replace("b:k", 0, "v2").get(), true);
        check("replace of a missing key", c.replace("b:absent", 0, "x").get(), false);
        check("append", c.append("b:k", "-tail").get(), true);
        check("prepend", c.prepend("b:k", "head-").get(), true);
        check("value after append and prepend", c.get("b:k"), "head-v2-tail");
        check("append to a missing key", c.append("b:absent", "x").get(), false);
        check("incr of a missing key", c.incr("b:n", 1), -1L);
        check("incr creates with a default", c.incr("b:n", 1, 10L, 0), 10L);
        check("incr", c.incr("b:n", 5), 15L);
        check("decr stops at 0", c.decr("b:n", 20), 0L);
        check("delete", c.delete("b:k").get(), true);
        check("get after delete", c.get("b:k"), null);
        check("delete of a missing key", c.delete("b:k").get(), false);
    }

    static void cas() throws Exception {
        MemcachedClient c = client();
        c.set("c:k", 0, "v1").get();
        CASValue<Object> first = c.gets("c:k");
        check("gets returns the value", first.getValue(), "v1");
        check("and a cas", first.getCas() > 0, true);
        check("cas with that cas", c.cas("c:k", first.getCas(), "v2"), CASResponse.OK);
        check("cas again with the old cas", c.cas("c:k", first.getCas(), "v3"), CASResponse.EXISTS);
        check("the value the cas wrote", c.get("c:k"), "v2");
        CASValue<Object> second = c.gets("c:k");
        check("a new cas after the write", second.getCas() != first.getCas(), true);
        c.delete("c:k").get();
        check("cas of a deleted key", c.cas("c:k", second.getCas(), "v4"), CASResponse.NOT_FOUND);
        OperationFuture<Boolean> set = c.set("c:s", 0, "s");
        set.get();
        if (mode.equals("binary")) {
            check("a set's future carries the new cas", set.getCas() != null && set.getCas() > 0, true);
        }
    }

    static void flags() throws Exception {
        MemcachedClient c = client();
        // SerializingTranscoder: a type tag in the flags, Java serialization for objects.
        Map<String, Object> values = new LinkedHashMap<>();
        values.put("f:str", "text");
        values.put("f:int", 42);
        values.put("f:long", 42L);
        values.put("f:bool", true);
        values.put("f:bytes", "raw".getBytes(StandardCharsets.UTF_8));
        values.put("f:obj", new Point(1, 2));
        for (Map.Entry<String, Object> e : values.entrySet()) {
            c.set(e.getKey(), 0, e.getValue()).get();
        }
        Map<String, Object> back = c.getBulk(values.keySet());
        check("a String reads back", back.get("f:str"), "text");
        check("an Integer reads back", back.get("f:int"), 42);
        check("a Long reads back", back.get("f:long"), 42L);
        check("a Boolean reads back", back.get("f:bool"), true);
        check("a byte[] reads back", new String((byte[]) back.get("f:bytes"), StandardCharsets.UTF_8), "raw");
        check("a Serializable reads back", back.get("f:obj"), new Point(1, 2).toString() == null ? null : back.get("f:obj"));
        check("the Serializable is equal", new Point(1, 2).equals(back.get("f:obj")), true);
        List<Object> flags = new ArrayList<>();
        for (String key : values.keySet()) {
            flags.add(rawGet(key).get("flags"));
        }
        check("flags of String, Integer, Long, Boolean, byte[], Serializable", flags, List.of(0, 512, 768, 256, 2048, 1));
        String longText = "compressible ".repeat(2000);
        c.set("f:zip", 0, longText).get();
        check("a String over 16 KiB is gzipped and reads back", c.get("f:zip"), longText);
        check("flags of a compressed String", rawGet("f:zip").get("flags"), 2);
        c.set("f:tagged", 0, "{\"a\":1}", new TaggedText()).get();
        check("a transcoder of our own", c.get("f:tagged", new TaggedText()), "flags 42: {\"a\":1}");
    }

    static void limits() throws Exception {
        MemcachedClient c = client();
        byte[] under = randomBytes(ITEM_LIMIT);
        check("set of a value of exactly the item limit", c.set("l:under", 0, under).get(), true);
        check("it reads back whole", c.get("l:under"), under);
        c.set("l:over", 0, "old").get();
        OperationFuture<Boolean> over = c.set("l:over", 0, randomBytes(ITEM_LIMIT + 1));
        // Binary: false with E2BIG's message. Text: the future throws (as with
        // memcached), and spymemcached reconnects.
        check("set of a value one byte over the limit", mode.equals("binary") ? outcome(over) : settle(over),
                mode.equals("binary")
                        ? List.of(false, "Too large.")
                        : "OperationException: SERVER_ERROR object too large for cache");
        check("the key is dropped, as memcached does", c.get("l:over"), null);
        check("the connection goes on", c.set("l:after", 0, "ok").get(), true);
        check("get after the refusal", c.get("l:after"), "ok");
    }

    static void keys() throws Exception {
        MemcachedClient c = client();
        String utf8 = "ключ:日本:🔑";
        check("set of a UTF-8 key", c.set(utf8, 0, "unicode").get(), true);
        check("get of a UTF-8 key", c.get(utf8), "unicode");
        String longest = "k".repeat(250);
        check("a 250-byte key", c.set(longest, 0, "long").get(), true);
        check("getBulk of both", c.getBulk(utf8, longest), Map.of(utf8, "unicode", longest, "long"));
        String spaced = "b k\u0001";
        if (mode.equals("binary")) {
            // The binary protocol carries any byte in a key; spymemcached lets
            // spaces and control characters through in binary mode.
            check("set of a key with a space and a control byte", c.set(spaced, 0, "spaced").get(), true);
            check("get of that key", c.get(spaced), "spaced");
        } else {
            Object refused;
            try {
                refused = c.set(spaced, 0, "x");
            } catch (IllegalArgumentException e) {
                refused = e;
            }
            check("a key with a space is refused by the client", refused,
                    new IllegalArgumentException("Key contains invalid characters:  ``b k\u0001''"));
        }
        String tooLong = "é".repeat(126);  // 252 bytes of UTF-8
        Object refused;
        try {
            refused = c.set(tooLong, 0, "x");
        } catch (IllegalArgumentException e) {
            refused = e.getMessage().startsWith("Key is too long") ? "Key is too long" : e;
        }
        check("a key over 250 bytes of UTF-8 is refused by the client", refused, "Key is too long");
    }

    static void twoConnections() throws Exception {
        MemcachedClient writer = client();
        MemcachedClient reader = client();
        check("set on one connection", writer.set("t:k", 0, "one").get(), true);
        check("read on the other at once", reader.get("t:k"), "one");
        writer.incr("t:n", 0, 7L, 0);
        check("a counter made on one, incremented on the other", reader.incr("t:n", 1), 8L);
        writer.delete("t:k").get();
        check("a delete on one is seen by the other", reader.get("t:k"), null);
    }

    static void multiget() throws Exception {
        // Text: one `get` line of every key (~400 KB); binary: a GetKQ per key, then a No-op.
        MemcachedClient c = client();
        List<String> keys = new ArrayList<>();
        for (int i = 0; i < 10000; i++) {
            keys.add(multigetKey(i));
        }
        Object got;
        try {
            got = timed("getBulk of 10000 keys (" + mode + ")", keys.size(), () -> c.getBulk(keys));
        } catch (RuntimeException e) {
            got = e;
        }
        check("getBulk answered", got instanceof Map ? "ok" : got, "ok");
        int wrong = 0;
        for (int i = 0; i < keys.size(); i++) {
            Object v = got instanceof Map<?, ?> m ? m.get(keys.get(i)) : null;
            wrong += ("v" + i).equals(v) ? 0 : 1;
        }
        check("every value read", wrong, 0);
    }

    static void batch() throws Exception {
        // spymemcached's batching: every call is asynchronous; 10,000 sets are
        // queued at once and their futures waited on, each with the default
        // 2.5 s operation timeout.
        MemcachedClient c = client();
        List<Object> results = timed("10000 async sets (" + mode + ")", 10000, () -> {
            List<OperationFuture<Boolean>> futures = new ArrayList<>();
            for (int i = 0; i < 10000; i++) {
                futures.add(c.set("batch:" + i, 0, "v" + i));
            }
            return waitAll(futures);
        });
        check("every set answered true within the timeout", count(results), Map.of("true", 10000));
        List<Object> adds = timed("10000 async adds (" + mode + ")", 10000, () -> {
            List<OperationFuture<Boolean>> futures = new ArrayList<>();
            for (int i = 0; i < 10000; i++) {
                futures.add(c.add("batch:add:" + i, 0, "a"));
            }
            return waitAll(futures);
        });
        check("every add answered true within the timeout", count(adds), Map.of("true", 10000));
        MemcachedClient other = client();
        List<String> keys = new ArrayList<>();
        for (int i = 0; i < 10000; i += 10) {
            keys.add("batch:" + i);
        }
        check("another connection reads them", other.getBulk(keys).size(), keys.size());
    }

    /**
     * Each future's outcome, in order; after the first that fails (a timeout),
     * the rest are not waited for (reported as "not waited for").
     */
    static List<Object> waitAll(List<OperationFuture<Boolean>> futures) {
        List<Object> outcomes = new ArrayList<>();
        boolean failed = false;
        for (OperationFuture<Boolean> f : futures) {
            Object outcome = failed ? "not waited for" : settle(f);
            failed = failed || outcome instanceof Throwable;
            outcomes.add(outcome);
        }
        return outcomes;
    }

    /** How many outcomes are of each kind ("true", "false" or an exception's class). */
    static Map<String, Integer> count(List<Object> outcomes) {
        Map<String, Integer> counts = new HashMap<>();
        for (Object o : outcomes) {
            String kind = o instanceof Throwable t ? t.getClass().getSimpleName() : String.valueOf(o);
            counts.merge(kind, 1, Integer::sum);
        }
        return counts;
    }

    static void ttl() throws Exception {
        // Stig refuses a future expiration (--ttl-policy reject): what spymemcached reports.
        MemcachedClient c = client();
        List<Object> refused = timed("a set refused for its TTL (" + mode + ")", 1, () -> outcome(c.set("ttl:k", 60, "v")));
        String message = "exptime must be 0: Stig is a database and items never expire (see --ttl-policy)";
        // Binary: false, with the server's text as the status message. Text: the
        // future throws; spymemcached takes CLIENT_ERROR for a broken stream and
        // reconnects.
        check("set with expiration 60", refused, mode.equals("binary")
                ? List.of(false, message)
                : List.of("OperationException: CLIENT_ERROR " + message, "CLIENT_ERROR " + message));
        // Text: this get waits for the reconnection (about 2 s, longer on a
        // loaded machine): it is given 20 s rather than the 2.5 s default,
        // which a slow reconnection outlasted (a CI flake, not a server fault).
        check("nothing stored", timed("the get after the refusal (" + mode + ")", 1,
                () -> c.asyncGet("ttl:k").get(20, java.util.concurrent.TimeUnit.SECONDS)), null);
        check("the connection goes on", c.set("ttl:k", 0, "v").get(), true);
        check("expiration 0 stores", c.get("ttl:k"), "v");
    }

    public static void main(String[] args) throws Exception {
        mode = args[0];
        host = args[1];
        port = Integer.parseInt(args[2]);
        String name = args[3];
        Map<String, Callable<Void>> cases = new HashMap<>();
        cases.put("basics", () -> { basics(); return null; });
        cases.put("cas", () -> { cas(); return null; });
        cases.put("flags", () -> { flags(); return null; });
        cases.put("limits", () -> { limits(); return null; });
        cases.put("keys", () -> { keys(); return null; });
        cases.put("two_connections", () -> { twoConnections(); return null; });
        cases.put("multiget", () -> { multiget(); return null; });
        cases.put("batch", () -> { batch(); return null; });
        cases.put("ttl", () -> { ttl(); return null; });
        Callable<Void> run = cases.get(name);
        if (run == null) {
            System.err.println("unknown case " + name);
            System.exit(2);
        }
        int status = 0;
        try {
            run.call();
            emit(Map.of("done", name));
        } catch (Exception e) {
            emit(Map.of("error", name + ": " + e));
            status = 1;
        }
        for (MemcachedClient c : CLIENTS) {
            c.shutdown(1, java.util.concurrent.TimeUnit.SECONDS);
        }
        System.exit(status);
    }
}
