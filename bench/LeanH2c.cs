using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Retrieval.Bench;

/// <summary>
/// A lean open-loop generator of unary gRPC calls for `bench recommend --lean-generator`: HTTP/2 over plain TCP written
/// out by hand, a few connections, one pacer thread that sends what has come due each time it wakes (every millisecond,
/// or as the main generator's <see cref="Pacer"/> says; all of a wake's frames for a connection in one send) and one blocking reader thread per connection: no thread pool, no HttpClient,
/// no per-call allocation. It measures what the services do when their caller costs little, as callers on other
/// machines do; the main generator stays the client library's. It asks the server not to compress headers with a
/// dynamic table (SETTINGS_HEADER_TABLE_SIZE 0), so the trailers' grpc-status can be read without one, and counts a call
/// as answered when it got a message and grpc-status 0.
/// </summary>
internal static class LeanH2c
{
    private const byte Data = 0x0, Headers = 0x1, RstStream = 0x3, Settings = 0x4, Ping = 0x6, GoAway = 0x7, WindowUpdate = 0x8;
    private const byte EndStream = 0x1, Ack = 0x1, EndHeaders = 0x4;
    private const int ReceiveWindow = 16 << 20;

    /// <summary>
    /// Sends <paramref name="rate"/> calls per second for <paramref name="seconds"/> to <paramref name="path"/> over
    /// <paramref name="connections"/> connections, call i with <paramref name="frames"/>[i % frames.Length] (gRPC-framed
    /// request messages), paced by <paramref name="pacer"/>; latencies from when each call was due (with how late it
    /// was sent) and from when it was sent.
    /// </summary>
    public static (RecommendBenchmark.Stats FromSchedule, RecommendBenchmark.Stats FromSend) Run(IPEndPoint server, string path, byte[][] frames,
        double rate, double seconds, int connections, TimeSpan deadline, Pacer pacer)
    {
        pacer.OnPacerThread();
        int total = Math.Max(1, (int)(rate * seconds));
        var calls = new Calls(total);
        var links = Enumerable.Range(0, connections).Select(_ => new Link(server, path, calls, deadline)).ToArray();
        try
        {
            var clock = Stopwatch.StartNew();
            calls.Clock = clock;
            foreach (var link in links)
            {
                link.StartReading();
            }
            int next = 0;
            while (next < total || links.Any(l => l.Backlog.Count > 0))
            {
                double now = clock.Elapsed.TotalSeconds;
                for (; next < total && next / rate <= now; next++)
                {
                    links[next % links.Length].Backlog.Enqueue(next);
                }
                foreach (var link in links)
                {
                    link.SendDue(frames);
                }
                if (now > total / rate + deadline.TotalSeconds)
                {
                    break; // the connections stopped taking calls: the rest count as failed
                }
                if (next < total)
                {
                    pacer.WaitUntil(next / rate, clock.Elapsed.TotalSeconds);
                }
                else
                {
                    Thread.Sleep(1); // all due: what is left is a backlog of connections out of stream credit
                }
            }
            // Wait for the answers, at most a deadline past the last send.
            var end = clock.Elapsed + deadline;
            while (Volatile.Read(ref calls.Pending) > 0 && clock.Elapsed < end && links.Any(l => !l.Closed))
            {
                Thread.Sleep(5);
            }
            double elapsed = clock.Elapsed.TotalSeconds;
            var fromDue = new List<double>(total);
            var fromSend = new List<double>(total);
            var sendLate = new List<double>(total);
            long errors = 0;
            for (int i = 0; i < total; i++)
            {
                if (calls.State[i] == Calls.Answered)
                {
                    fromDue.Add((calls.DoneAt[i] - i / rate) * 1000);
                    fromSend.Add((calls.DoneAt[i] - calls.SentAt[i]) * 1000);
                    sendLate.Add((calls.SentAt[i] - i / rate) * 1000);
                }
                else
                {
                    errors++;
                }
            }
            var late = RecommendBenchmark.Stats.Of(sendLate, elapsed, 0);
            return (RecommendBenchmark.Stats.Of(fromDue, elapsed, errors) with { SendLate = (late.P50, late.P99) },
                RecommendBenchmark.Stats.Of(fromSend, elapsed, errors));
        }
        finally
        {
            foreach (var link in links)
            {
                link.Dispose();
            }
        }
    }

    /// <summary>Every call's state and times (seconds on <see cref="Clock"/>), shared by the pacer and the readers.</summary>
    private sealed class Calls(int total)
    {
        public const byte Waiting = 0, Sent = 1, GotMessage = 2, Answered = 3, Failed = 4;
        public readonly byte[] State = new byte[total];
        public readonly double[] SentAt = new double[total];
        public readonly double[] DoneAt = new double[total];
        public int Pending = total;
        public Stopwatch Clock = null!;

        public void Finish(int call, bool answered)
        {
            DoneAt[call] = Clock.Elapsed.TotalSeconds;
            Volatile.Write(ref State[call], answered ? Answered : Failed);
            Interlocked.Decrement(ref Pending);
        }
    }

    /// <summary>One HTTP/2 connection: the pacer writes requests, its own thread reads frames.</summary>
    private sealed class Link : IDisposable
    {
        private readonly Socket _socket;
        private readonly Calls _calls;
        private readonly byte[] _headerBlock;
        private readonly Lock _send = new();
        private readonly int[] _callOfStream;
        private readonly Thread _reader;
        private byte[] _out = new byte[64 * 1024];
        private int _outLength;
        private int _nextStream = 1;
        private int _inFlight;
        private volatile int _maxStreams = 100;
        private long _sendWindow = 65_535;
        private volatile bool _closed;

        public Link(IPEndPoint server, string path, Calls calls, TimeSpan deadline)
        {
            _calls = calls;
            _callOfStream = new int[calls.State.Length + 1];
            _socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            _socket.Connect(server);
            _headerBlock = HeaderBlock(path, $"{server.Address}:{server.Port}", deadline);
            Append("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8);
            // No dynamic header table, no push, a wide stream window; then widen the connection's window too.
            Span<byte> settings = stackalloc byte[18];
            WriteSetting(settings, 0x1, 0);
            WriteSetting(settings[6..], 0x2, 0);
            WriteSetting(settings[12..], 0x4, ReceiveWindow);
            AppendFrame(Settings, 0, 0, settings);
            AppendWindowUpdate(0, ReceiveWindow);
            Flush();
            _reader = new Thread(Read) { IsBackground = true, Name = "lean h2c reader" };
        }

        public Queue<int> Backlog { get; } = new();

        public bool Closed => _closed;

        public void StartReading() => _reader.Start();

        /// <summary>Sends the backlog's calls the connection can take now, in one write.</summary>
        public void SendDue(byte[][] frames)
        {
            if (_closed)
            {
                while (Backlog.TryDequeue(out int call))
                {
                    _calls.Finish(call, answered: false);
                }
                return;
            }
            lock (_send)
            {
                while (Backlog.TryPeek(out int call) && Volatile.Read(ref _inFlight) < _maxStreams)
                {
                    var frame = frames[call % frames.Length];
                    if (Interlocked.Read(ref _sendWindow) < frame.Length)
                    {
                        break;
                    }
                    Backlog.Dequeue();
                    Interlocked.Add(ref _sendWindow, -frame.Length);
                    int stream = _nextStream;
                    _nextStream += 2;
                    Volatile.Write(ref _callOfStream[stream / 2], call);
                    Interlocked.Increment(ref _inFlight);
                    _calls.SentAt[call] = _calls.Clock.Elapsed.TotalSeconds;
                    _calls.State[call] = Calls.Sent;
                    AppendFrame(Headers, EndHeaders, stream, _headerBlock);
                    AppendFrame(Data, EndStream, stream, frame);
                }
                Flush();
            }
        }

        private void Read()
        {
            var buffer = new byte[256 * 1024];
            int length = 0;
            long unacknowledged = 0;
            try
            {
                while (true)
                {
                    int read = _socket.Receive(buffer, length, buffer.Length - length, SocketFlags.None);
                    if (read == 0)
                    {
                        break;
                    }
                    length += read;
                    int at = 0;
                    while (length - at >= 9)
                    {
                        int size = (buffer[at] << 16) | (buffer[at + 1] << 8) | buffer[at + 2];
                        if (length - at < 9 + size)
                        {
                            break;
                        }
                        byte type = buffer[at + 3], flags = buffer[at + 4];
                        int stream = BinaryPrimitives.ReadInt32BigEndian(buffer.AsSpan(at + 5)) & 0x7fffffff;
                        var payload = buffer.AsSpan(at + 9, size);
                        at += 9 + size;
                        if (type == Data)
                        {
                            unacknowledged += size;
                        }
                        if (!OnFrame(type, flags, stream, payload))
                        {
                            return;
                        }
                    }
                    Array.Copy(buffer, at, buffer, 0, length - at);
                    length -= at;
                    if (unacknowledged >= ReceiveWindow / 2)
                    {
                        lock (_send)
                        {
                            AppendWindowUpdate(0, (int)unacknowledged);
                            Flush();
                        }
                        unacknowledged = 0;
                    }
                }
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
            }
            finally
            {
                _closed = true;
            }
        }

        /// <summary>Handles one frame; false when the connection is over.</summary>
        private bool OnFrame(byte type, byte flags, int stream, ReadOnlySpan<byte> payload)
        {
            switch (type)
            {
                case Data when stream != 0 && payload.Length >= 5:
                    _calls.State[CallOf(stream)] = Calls.GotMessage;
                    break;
                case Headers when (flags & EndStream) != 0:
                    int call = CallOf(stream);
                    Done(call, _calls.State[call] == Calls.GotMessage && GrpcStatus(payload, flags) == "0");
                    break;
                case RstStream:
                    Done(CallOf(stream), answered: false);
                    break;
                case Settings when (flags & Ack) == 0:
                    for (int i = 0; i + 6 <= payload.Length; i += 6)
                    {
                        if (BinaryPrimitives.ReadUInt16BigEndian(payload[i..]) == 0x3)
                        {
                            _maxStreams = (int)Math.Min(int.MaxValue, BinaryPrimitives.ReadUInt32BigEndian(payload[(i + 2)..]));
                        }
                    }
                    lock (_send)
                    {
                        AppendFrame(Settings, Ack, 0, []);
                        Flush();
                    }
                    break;
                case Ping when (flags & Ack) == 0:
                    lock (_send)
                    {
                        AppendFrame(Ping, Ack, 0, payload);
                        Flush();
                    }
                    break;
                case WindowUpdate when stream == 0:
                    Interlocked.Add(ref _sendWindow, BinaryPrimitives.ReadInt32BigEndian(payload) & 0x7fffffff);
                    break;
                case GoAway:
                    return false;
            }
            return true;
        }

        private int CallOf(int stream) => Volatile.Read(ref _callOfStream[stream / 2]);

        private void Done(int call, bool answered)
        {
            Interlocked.Decrement(ref _inFlight);
            _calls.Finish(call, answered);
        }

        private void Append(ReadOnlySpan<byte> bytes)
        {
            if (_outLength + bytes.Length > _out.Length)
            {
                Array.Resize(ref _out, Math.Max(_out.Length * 2, _outLength + bytes.Length));
            }
            bytes.CopyTo(_out.AsSpan(_outLength));
            _outLength += bytes.Length;
        }

        private void AppendFrame(byte type, byte flags, int stream, ReadOnlySpan<byte> payload)
        {
            Span<byte> header = stackalloc byte[9];
            header[0] = (byte)(payload.Length >> 16);
            header[1] = (byte)(payload.Length >> 8);
            header[2] = (byte)payload.Length;
            header[3] = type;
            header[4] = flags;
            BinaryPrimitives.WriteInt32BigEndian(header[5..], stream);
            Append(header);
            Append(payload);
        }

        private void AppendWindowUpdate(int stream, int increment)
        {
            Span<byte> payload = stackalloc byte[4];
            BinaryPrimitives.WriteInt32BigEndian(payload, increment);
            AppendFrame(WindowUpdate, 0, stream, payload);
        }

        private void Flush()
        {
            try
            {
                for (int sent = 0; sent < _outLength;)
                {
                    sent += _socket.Send(_out, sent, _outLength - sent, SocketFlags.None);
                }
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                _closed = true;
            }
            _outLength = 0;
        }

        public void Dispose()
        {
            _closed = true;
            _socket.Dispose();
            if (_reader.IsAlive)
            {
                _reader.Join(TimeSpan.FromSeconds(5));
            }
        }
    }

    private static void WriteSetting(Span<byte> at, ushort id, int value)
    {
        BinaryPrimitives.WriteUInt16BigEndian(at, id);
        BinaryPrimitives.WriteInt32BigEndian(at[2..], value);
    }

    /// <summary>A request's header block (HPACK, static table and literals only).</summary>
    private static byte[] HeaderBlock(string path, string authority, TimeSpan deadline)
    {
        var block = new List<byte> { 0x83, 0x86 }; // :method POST, :scheme http
        void Literal(int nameIndex, int prefixBits, string value)
        {
            Integer(block, nameIndex, prefixBits, 0x00);
            Text(block, value);
        }
        void NewName(string name, string value)
        {
            block.Add(0x00);
            Text(block, name);
            Text(block, value);
        }
        Literal(4, 4, path); // :path
        Literal(1, 4, authority); // :authority
        Literal(31, 4, "application/grpc"); // content-type
        NewName("te", "trailers");
        NewName("grpc-timeout", $"{Math.Max(1, (long)deadline.TotalMilliseconds)}m");
        return [.. block];
    }

    private static void Integer(List<byte> block, int value, int prefixBits, byte flags)
    {
        int max = (1 << prefixBits) - 1;
        if (value < max)
        {
            block.Add((byte)(flags | value));
            return;
        }
        block.Add((byte)(flags | max));
        for (value -= max; value >= 128; value >>= 7)
        {
            block.Add((byte)((value & 0x7f) | 0x80));
        }
        block.Add((byte)value);
    }

    private static void Text(List<byte> block, string value)
    {
        var bytes = Encoding.ASCII.GetBytes(value);
        Integer(block, bytes.Length, 7, 0x00);
        block.AddRange(bytes);
    }

    /// <summary>
    /// The grpc-status in a header block, or null: indexed fields and literals of the static table and plain strings,
    /// which is all a server may send once told its peer keeps no dynamic table (Huffman-coded values read as null).
    /// </summary>
    private static string? GrpcStatus(ReadOnlySpan<byte> block, byte flags)
    {
        if ((flags & EndHeaders) == 0)
        {
            return null; // continued in CONTINUATION frames: never for trailers this small
        }
        int at = 0;
        while (at < block.Length)
        {
            byte first = block[at];
            if ((first & 0x80) != 0)
            {
                ReadInteger(block, ref at, 7); // an indexed field (":status 200" and the like)
                continue;
            }
            if ((first & 0xe0) == 0x20)
            {
                ReadInteger(block, ref at, 5); // a table size update
                continue;
            }
            int prefix = (first & 0x40) != 0 ? 6 : 4;
            int nameIndex = ReadInteger(block, ref at, prefix);
            string? name = nameIndex == 0 ? ReadText(block, ref at) : null;
            string? value = ReadText(block, ref at);
            if (name == "grpc-status")
            {
                return value;
            }
        }
        return null;
    }

    private static int ReadInteger(ReadOnlySpan<byte> block, ref int at, int prefixBits)
    {
        int max = (1 << prefixBits) - 1;
        int value = block[at++] & max;
        if (value < max)
        {
            return value;
        }
        for (int shift = 0; ; shift += 7)
        {
            byte next = block[at++];
            value += (next & 0x7f) << shift;
            if ((next & 0x80) == 0)
            {
                return value;
            }
        }
    }

    private static string? ReadText(ReadOnlySpan<byte> block, ref int at)
    {
        bool huffman = (block[at] & 0x80) != 0;
        int length = ReadInteger(block, ref at, 7);
        var text = block.Slice(at, length);
        at += length;
        return huffman ? null : Encoding.ASCII.GetString(text);
    }
}
