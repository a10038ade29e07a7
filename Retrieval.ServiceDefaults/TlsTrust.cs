using Retrieval.Tls;

namespace Retrieval.ServiceDefaults;

/// <summary>
/// TLS to another service whose certificate a private authority issued: the authorities come from a PEM file, and only
/// they are trusted (see <see cref="TrustedAuthorities"/>).
/// </summary>
public static class TlsTrust
{
    /// <summary>Makes <paramref name="handler"/> accept only server certificates issued by the authorities in <paramref name="caPath"/>.</summary>
    /// <exception cref="ArgumentException">The file is missing, unreadable, or holds no certificate.</exception>
    public static void TrustOnly(SocketsHttpHandler handler, string caPath)
    {
        var trusted = TrustedAuthorities.Load(caPath);
        handler.SslOptions.RemoteCertificateValidationCallback = (_, certificate, chain, errors) => trusted.Validate(certificate, chain, errors);
    }

    /// <summary>Null when <paramref name="caPath"/> holds at least one readable certificate, else what is wrong with it.</summary>
    public static string? Problem(string caPath)
    {
        try
        {
            TrustedAuthorities.Load(caPath);
            return null;
        }
        catch (ArgumentException e)
        {
            return e.Message;
        }
    }
}
