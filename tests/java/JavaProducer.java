import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Future;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * The official Kafka Java client as a producer the tests drive, so the suite reads what
 * real producers write (compressed batches, transactions, headers) and not only what our
 * own aiokafka producer writes.
 *
 * Arguments are producer configs, {@code name=value} ({@code bootstrap.servers=...},
 * {@code compression.type=zstd}, {@code transactional.id=...}). Commands come one per line
 * on stdin; each answers {@code ok} on stdout once done, so a test can act in between:
 *
 * <pre>
 *   send TOPIC PARTITION TIMESTAMP KEY VALUE [HEADER_KEY=HEADER_VALUE ...]
 *   config NAME=VALUE ...     (close the producer, open one with these configs changed)
 *   flush | begin | commit | abort
 * </pre>
 *
 * Keys, values, header keys and header values are hex (header keys UTF-8, as the client
 * writes them), {@code -} for null, {@code .} for empty; PARTITION and TIMESTAMP are {@code -} for the client's
 * choice. {@code send} returns at once (records batch up, as in any real producer);
 * {@code flush}, {@code commit}, {@code abort} and {@code config} wait until every record
 * sent before them is acknowledged. End of input closes the producer, flushing it, but a
 * transaction still open then is left open: the JVM halts without ending it.
 */
public final class JavaProducer {
    private static final HexFormat HEX = HexFormat.of();

    private JavaProducer() {}

    private static byte[] bytes(String field) {
        return field.equals("-") ? null : field.equals(".") ? new byte[0] : HEX.parseHex(field);
    }

    private static Integer number(String field) {
        return field.equals("-") ? null : Integer.valueOf(field);
    }

    private static Long millis(String field) {
        return field.equals("-") ? null : Long.valueOf(field);
    }

    private static void configure(Properties config, String[] pairs, int from) {
        for (int i = from; i < pairs.length; i++) {
            int eq = pairs[i].indexOf('=');
            config.put(pairs[i].substring(0, eq), pairs[i].substring(eq + 1));
        }
    }

    private static KafkaProducer<byte[], byte[]> start(Properties config) {
        KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(config);
        if (config.containsKey("transactional.id")) {
            producer.initTransactions();
        }
        return producer;
    }

    private static void acknowledged(
            KafkaProducer<byte[], byte[]> producer, List<Future<RecordMetadata>> sent)
            throws Exception {
        producer.flush();
        for (Future<RecordMetadata> ack : sent) {
            ack.get();
        }
        sent.clear();
    }

    public static void main(String[] args) throws Exception {
        Properties config = new Properties();
        configure(config, args, 0);
        config.put("key.serializer", ByteArraySerializer.class.getName());
        config.put("value.serializer", ByteArraySerializer.class.getName());
        KafkaProducer<byte[], byte[]> producer = start(config);
        boolean open = false;
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        BufferedReader input =
                new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        for (String line = input.readLine(); line != null; line = input.readLine()) {
            String[] f = line.trim().split(" ");
            switch (f[0]) {
                case "send" -> {
                    List<Header> headers = new ArrayList<>();
                    for (int i = 6; i < f.length; i++) {
                        String[] kv = f[i].split("=", 2);
                        String key = new String(HEX.parseHex(kv[0]), StandardCharsets.UTF_8);
                        headers.add(new RecordHeader(key, bytes(kv[1])));
                    }
                    sent.add(producer.send(new ProducerRecord<>(
                            f[1], number(f[2]), millis(f[3]), bytes(f[4]), bytes(f[5]), headers)));
                }
                case "config" -> {
                    acknowledged(producer, sent);
                    producer.close();
                    configure(config, f, 1);
                    producer = start(config);
                }
                case "flush" -> acknowledged(producer, sent);
                case "begin" -> {
                    producer.beginTransaction();
                    open = true;
                }
                case "commit" -> {
                    acknowledged(producer, sent);
                    producer.commitTransaction();
                    open = false;
                }
                case "abort" -> {
                    acknowledged(producer, sent);
                    producer.abortTransaction();
                    open = false;
                }
                default -> throw new IllegalArgumentException("unknown command: " + line);
            }
            System.out.println("ok");
            System.out.flush();
        }
        if (open) {
            Runtime.getRuntime().halt(0);
        }
        producer.close();
    }
}
