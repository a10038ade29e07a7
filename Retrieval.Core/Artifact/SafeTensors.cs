using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Retrieval.Core.Artifact;

/// <summary>A named float32, int32 or int64 tensor, row-major.</summary>
public sealed record NamedTensor(string Name, int[] Shape, float[]? Floats = null, int[]? Ints = null, long[]? Longs = null)
{
    public long Elements => Shape.Aggregate(1L, (a, b) => a * b);

    public string DType => Floats is not null ? "F32" : Ints is not null ? "I32" : "I64";

    internal int ElementSize => Longs is not null ? 8 : 4;

    internal long Length => Floats?.LongLength ?? Ints?.LongLength ?? Longs!.LongLength;

    internal ReadOnlySpan<byte> Bytes => Floats is not null ? MemoryMarshal.AsBytes(Floats.AsSpan())
        : Ints is not null ? MemoryMarshal.AsBytes(Ints.AsSpan()) : MemoryMarshal.AsBytes(Longs.AsSpan());

    public static NamedTensor Of(string name, float[] data, params int[] shape) => new(name, shape, Floats: data);

    public static NamedTensor Of(string name, int[] data, params int[] shape) => new(name, shape, Ints: data);

    public static NamedTensor Of(string name, long[] data, params int[] shape) => new(name, shape, Longs: data);

    public float[] RequireFloats(params int[] shape)
    {
        if (Floats is null || !Shape.AsSpan().SequenceEqual(shape))
        {
            throw new InvalidDataException(
                $"tensor '{Name}' is {DType}[{string.Join(',', Shape)}], expected F32[{string.Join(',', shape)}]");
        }
        return Floats;
    }
}

/// <summary>One tensor of a safetensors header: its byte range relative to the start of the data.</summary>
public sealed record TensorEntry(string Name, string DType, int[] Shape, long Begin, long End)
{
    public long Elements => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>
/// The safetensors format (8-byte little-endian header length, a JSON header of dtype/shape/offsets, then
/// the raw little-endian data), so Python tools read the weights too. F32, I32 and I64 only.
/// </summary>
public static class SafeTensors
{
    public static void Write(string path, IEnumerable<NamedTensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.ToList();
        var header = new JsonObject();
        if (metadata is { Count: > 0 })
        {
            var meta = new JsonObject();
            foreach (var (k, v) in metadata)
            {
                meta[k] = v;
            }
            header["__metadata__"] = meta;
        }
        long offset = 0;
        foreach (var t in list)
        {
            long bytes = t.Elements * t.ElementSize;
            if (t.Elements != t.Length)
            {
                throw new ArgumentException($"tensor '{t.Name}' has {t.Length} values for shape [{string.Join(',', t.Shape)}]");
            }
            header[t.Name] = new JsonObject
            {
                ["dtype"] = t.DType,
                ["shape"] = new JsonArray([.. t.Shape.Select(s => JsonValue.Create(s))]),
                ["data_offsets"] = new JsonArray(offset, offset + bytes),
            };
            offset += bytes;
        }
        var json = Encoding.UTF8.GetBytes(header.ToJsonString());
        int padded = (json.Length + 7) / 8 * 8;
        using var stream = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16);
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)padded);
        stream.Write(length);
        stream.Write(json);
        for (int i = json.Length; i < padded; i++)
        {
            stream.WriteByte((byte)' ');
        }
        foreach (var t in list)
        {
            var bytes = t.Bytes;
            if (!BitConverter.IsLittleEndian)
            {
                throw new PlatformNotSupportedException("safetensors writing needs a little-endian machine");
            }
            stream.Write(bytes);
        }
        stream.Flush(flushToDisk: true);
    }

    /// <summary>Every tensor of the file, read into managed arrays.</summary>
    public static Dictionary<string, NamedTensor> Read(string path)
    {
        var (dataStart, entries) = ReadHeader(path);
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        return entries.Values.ToDictionary(e => e.Name, e => ReadTensor(stream, dataStart, e), StringComparer.Ordinal);
    }

    /// <summary>One tensor of the file, read into a managed array.</summary>
    public static NamedTensor ReadTensor(string path, long dataStart, TensorEntry entry)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        return ReadTensor(stream, dataStart, entry);
    }

    private static NamedTensor ReadTensor(FileStream stream, long dataStart, TensorEntry entry)
    {
        var bytes = new byte[entry.End - entry.Begin];
        stream.Position = dataStart + entry.Begin;
        stream.ReadExactly(bytes);
        return entry.DType switch
        {
            "F32" => NamedTensor.Of(entry.Name, MemoryMarshal.Cast<byte, float>(bytes.AsSpan()).ToArray(), entry.Shape),
            "I32" => NamedTensor.Of(entry.Name, MemoryMarshal.Cast<byte, int>(bytes.AsSpan()).ToArray(), entry.Shape),
            _ => NamedTensor.Of(entry.Name, MemoryMarshal.Cast<byte, long>(bytes.AsSpan()).ToArray(), entry.Shape),
        };
    }

    /// <summary>
    /// Streams an F32 tensor's rows of <paramref name="rowLength"/> values to <paramref name="onRow"/>, through one
    /// small buffer, so that a catalogue of any size is never held twice while loading.
    /// </summary>
    public static void ReadRows(string path, long dataStart, TensorEntry entry, int rowLength, Action<int, ReadOnlySpan<float>> onRow)
    {
        if (entry.DType != "F32" || entry.Elements % rowLength != 0)
        {
            throw new InvalidDataException($"{path}: tensor '{entry.Name}' is {entry.DType}[{string.Join(',', entry.Shape)}], not F32 rows of {rowLength}");
        }
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16) { Position = dataStart + entry.Begin };
        int rowsPerChunk = Math.Max(1, (1 << 20) / (rowLength * sizeof(float)));
        var buffer = new float[rowsPerChunk * rowLength];
        long rows = entry.Elements / rowLength;
        for (long row = 0; row < rows; row += rowsPerChunk)
        {
            int count = (int)Math.Min(rowsPerChunk, rows - row);
            var chunk = buffer.AsSpan(0, count * rowLength);
            stream.ReadExactly(MemoryMarshal.AsBytes(chunk));
            for (int r = 0; r < count; r++)
            {
                onRow((int)(row + r), chunk.Slice(r * rowLength, rowLength));
            }
        }
    }

    /// <summary>The header: where the data starts, and each tensor's dtype, shape and byte range, checked against the file.</summary>
    public static (long DataStart, Dictionary<string, TensorEntry> Entries) ReadHeader(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        long fileLength = stream.Length;
        if (fileLength < 8)
        {
            throw new InvalidDataException($"{path}: too short for a safetensors file");
        }
        Span<byte> prefix = stackalloc byte[8];
        stream.ReadExactly(prefix);
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
        if (headerLength > (ulong)(fileLength - 8) || headerLength > int.MaxValue)
        {
            throw new InvalidDataException($"{path}: header length {headerLength} exceeds the file ({fileLength} bytes); truncated?");
        }
        var headerBytes = new byte[headerLength];
        stream.ReadExactly(headerBytes);
        JsonObject header;
        try
        {
            header = JsonNode.Parse(headerBytes)!.AsObject();
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: the header is not valid JSON ({e.Message})");
        }
        long dataStart = 8 + (long)headerLength;
        var entries = new Dictionary<string, TensorEntry>(StringComparer.Ordinal);
        foreach (var (name, node) in header)
        {
            if (name == "__metadata__")
            {
                continue;
            }
            var entry = node!.AsObject();
            var dtype = entry["dtype"]!.GetValue<string>();
            var shape = entry["shape"]!.AsArray().Select(s => s!.GetValue<int>()).ToArray();
            var offsets = entry["data_offsets"]!.AsArray().Select(o => o!.GetValue<long>()).ToArray();
            long elements = shape.Aggregate(1L, (a, b) => a * b);
            int size = dtype switch
            {
                "F32" or "I32" => 4,
                "I64" => 8,
                _ => throw new InvalidDataException($"{path}: tensor '{name}' has dtype {dtype}; only F32, I32 and I64 are read"),
            };
            if (offsets.Length != 2 || offsets[0] < 0 || offsets[1] - offsets[0] != elements * size || dataStart + offsets[1] > fileLength)
            {
                throw new InvalidDataException($"{path}: tensor '{name}' has offsets [{string.Join(", ", offsets)}] that do not fit its shape or the file; truncated?");
            }
            entries[name] = new TensorEntry(name, dtype, shape, offsets[0], offsets[1]);
        }
        return (dataStart, entries);
    }
}
