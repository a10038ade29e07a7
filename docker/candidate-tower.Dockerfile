# CandidateTower.Service: runtime image without the SDK or TorchSharp. Build from the repository root:
#   docker build -f docker/candidate-tower.Dockerfile -t retrieval/candidate-tower .
FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
WORKDIR /src
COPY Directory.Build.props Directory.Build.targets Directory.Packages.props .editorconfig ./
COPY build/ build/
COPY protos/ protos/
COPY Retrieval.Core/ Retrieval.Core/
COPY Retrieval.ServiceDefaults/ Retrieval.ServiceDefaults/
COPY CandidateTower.Service/ CandidateTower.Service/
RUN dotnet publish CandidateTower.Service/CandidateTower.Service.csproj -c Release -o /app

FROM mcr.microsoft.com/dotnet/aspnet:10.0
WORKDIR /app
COPY --from=build /app .
ENV Urls=http://0.0.0.0:5101 \
    Model__Directory=/models \
    Metrics__Url=http://0.0.0.0:9101
EXPOSE 5101 9101
VOLUME /models
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s CMD ["dotnet", "CandidateTower.Service.dll", "healthcheck", "http://127.0.0.1:5101"]
ENTRYPOINT ["dotnet", "CandidateTower.Service.dll"]
