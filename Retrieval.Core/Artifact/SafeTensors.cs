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

    public static Dictionary<string, NamedTensor> Read(string path)
    {
        var bytes = File.ReadAllBytes(path);
        if (bytes.Length < 8)
        {
            throw new InvalidDataException($"{path}: too short for a safetensors file");
        }
        ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        if (headerLength > (ulong)(bytes.Length - 8))
        {
            throw new InvalidDataException($"{path}: header length {headerLength} exceeds the file ({bytes.Length} bytes); truncated?");
        }
        JsonObject header;
        try
        {
            header = JsonNode.Parse(bytes.AsSpan(8, (int)headerLength))!.AsObject();
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: the header is not valid JSON ({e.Message})");
        }
        int dataStart = 8 + (int)headerLength;
        var result = new Dictionary<string, NamedTensor>(StringComparer.Ordinal);
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
            if (offsets[1] - offsets[0] != elements * size || dataStart + offsets[1] > bytes.Length)
            {
                throw new InvalidDataException($"{path}: tensor '{name}' has offsets [{offsets[0]}, {offsets[1]}] that do not fit its shape or the file; truncated?");
            }
            var span = bytes.AsSpan(dataStart + (int)offsets[0], (int)(elements * size));
            result[name] = dtype switch
            {
                "F32" => NamedTensor.Of(name, MemoryMarshal.Cast<byte, float>(span).ToArray(), shape),
                "I32" => NamedTensor.Of(name, MemoryMarshal.Cast<byte, int>(span).ToArray(), shape),
                _ => NamedTensor.Of(name, MemoryMarshal.Cast<byte, long>(span).ToArray(), shape),
            };
        }
        return result;
    }
}
